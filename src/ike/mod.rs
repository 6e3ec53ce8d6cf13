//! IKE: the key exchange for the L2TP/IPsec profile every OS has built in (IKEv1 Main
//! Mode with a pre-shared key, then Quick Mode for ESP transport mode to UDP 1701).

pub mod v1;
