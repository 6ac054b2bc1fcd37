//! Per-state fixtures and transition tests (written next).
