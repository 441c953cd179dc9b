//! Integration tests for the surface_integrations routes (being written).
