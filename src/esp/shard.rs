//! SA shard table.
