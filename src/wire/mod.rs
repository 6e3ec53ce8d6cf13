//! Zero-copy packet views and reprs (smoltcp model).
