//! Integration tests for the surface_posts routes (being written).
