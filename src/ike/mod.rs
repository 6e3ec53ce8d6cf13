//! IKE, the key exchange that sets up the ESP SAs: IKEv1 (RFC 2409) with pre-shared
//! keys, as Windows, macOS, iOS and Android speak it for L2TP/IPsec.

pub mod v1;
