//! Data path stages.
