//! Counters of the control plane; every dropped message has a reason here.

/// Counters of an [`crate::l2tp::Lns`] or [`crate::l2tp::Lac`] since it was created,
/// plus the current number of tunnels and sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tunnels held now (including ones closing or lingering after a StopCCN).
    pub tunnels: usize,
    /// Sessions held now (up or being set up).
    pub sessions: usize,
    /// Control connections that reached the established state.
    pub tunnels_established: u64,
    /// Tunnels reported down.
    pub tunnels_down: u64,
    /// Sessions that came up.
    pub sessions_established: u64,
    /// Sessions that were up and went down.
    pub sessions_down: u64,
    /// Control messages (ZLBs included) handed to `input`.
    pub messages_in: u64,
    /// Control messages transmitted (retransmissions and ZLBs included).
    pub messages_out: u64,
    /// ZLB acknowledgements sent.
    pub zlbs_sent: u64,
    /// Retransmitted messages.
    pub retransmits: u64,
    /// Tunnels whose peer stopped acknowledging (retries exhausted).
    pub retransmit_exhausted: u64,
    /// Duplicates (Ns before the expected one): dropped and re-acknowledged.
    pub duplicates: u64,
    /// Messages ahead of the expected Ns, held for in-order delivery.
    pub reordered: u64,
    /// Messages beyond our receive window: dropped.
    pub out_of_window: u64,
    /// Nr values acknowledging messages never sent: ignored.
    pub bad_nr: u64,
    /// Bytes that are not a well-formed L2TP control message: dropped.
    pub malformed: u64,
    /// Messages for a tunnel id we do not hold: dropped.
    pub unknown_tunnel: u64,
    /// Messages for a tunnel that arrived from another transport: dropped.
    pub wrong_peer: u64,
    /// Session messages naming a session we do not hold: ignored.
    pub unknown_session: u64,
    /// Messages that are valid but make no sense for our role or state: ignored.
    pub unexpected: u64,
    /// Tunnel authentication failures (§5.1.1).
    pub auth_failures: u64,
    /// Messages refused for an unknown mandatory AVP, a missing or bad AVP.
    pub invalid: u64,
    /// Tunnels or sessions refused because no id was free.
    pub no_ids: u64,
    /// WAN-Error-Notify messages received.
    pub wen_received: u64,
    /// Set-Link-Info messages received.
    pub sli_received: u64,
}
