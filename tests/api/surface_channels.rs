//! Integration tests for the surface_channels routes (being written).
