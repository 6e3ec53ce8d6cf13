//! Calls (sessions) inside a tunnel, and the LNS side of incoming calls (RFC 2661
//! §5.2.1, §7.4.1): ICRQ → ICRP → ICCN, CDN either way (§5.6), WEN and SLI
//! recorded, OCRQ refused (this LNS takes incoming calls only).

use std::time::Instant;

use crate::wire::l2tp::{MessageType, avp_type};

use super::event::Event;
use super::message::{Kind, Message};
use super::result::{ResultCode, cdn, error};
use super::tunnel::{Ctx, Tunnel};

/// Where a call is in its setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallState {
    /// LAC: waiting for the control connection before sending ICRQ.
    Pending,
    /// LAC: ICRQ sent, waiting for ICRP.
    WaitReply,
    /// LNS: ICRP sent, waiting for ICCN.
    WaitConnect,
    /// Up: PPP runs.
    Established,
}

/// One call.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// Session id we assigned.
    pub local_id: u16,
    /// The peer's session id (0 until it tells).
    pub peer_id: u16,
    pub state: CallState,
    pub call_serial: u32,
    /// When the call started, for the half-open timeout.
    pub created: Instant,
    pub calling_number: Option<Vec<u8>>,
    pub called_number: Option<Vec<u8>>,
}

impl Tunnel {
    /// The LNS's handling of a session-level message on an established tunnel.
    /// `session_id` is the header's Session ID (ours, or 0 for a new call).
    pub(crate) fn lns_call_message(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        session_id: u16,
        message: &Message,
    ) {
        match message.kind {
            Kind::Known(MessageType::Icrq) => self.on_icrq(now, ctx, message),
            Kind::Known(MessageType::Iccn) => self.on_iccn(now, ctx, session_id, message),
            Kind::Known(MessageType::Cdn) => self.on_cdn(ctx, session_id, message),
            Kind::Known(MessageType::Wen | MessageType::Sli) => {
                self.on_link_report(now, ctx, session_id, message)
            }
            Kind::Known(MessageType::Ocrq) => {
                ctx.stats.unexpected += 1;
                let peer_session = message.avps.assigned_session_id.unwrap_or(0);
                let result = ResultCode::new(
                    cdn::PERMANENT_LACK,
                    None,
                    "outgoing calls are not supported: this LNS takes incoming calls only",
                );
                self.send_cdn(now, ctx, 0, peer_session, &result);
            }
            _ => ctx.stats.unexpected += 1,
        }
    }

    fn on_icrq(&mut self, now: Instant, ctx: &mut Ctx<'_>, message: &Message) {
        let avps = &message.avps;
        let peer_session = avps.assigned_session_id.unwrap_or(0);
        if let Some(problem) = &message.problem {
            // No session of ours exists: the CDN carries Assigned Session ID 0.
            ctx.stats.invalid += 1;
            self.send_cdn(now, ctx, 0, peer_session, &problem.result_code());
            return;
        }
        let sessions = &self.sessions;
        let Some(local_id) = self
            .session_ids
            .allocate(self.worker, |id| sessions.contains_key(&id))
        else {
            ctx.stats.no_ids += 1;
            let result = ResultCode::new(
                cdn::TEMPORARY_LACK,
                Some(error::NO_RESOURCES),
                "no free session id",
            );
            self.send_cdn(now, ctx, 0, peer_session, &result);
            return;
        };
        let mut icrp = self.builder(ctx, MessageType::Icrp);
        icrp.u16(true, avp_type::ASSIGNED_SESSION_ID, local_id);
        self.send(now, ctx, icrp, peer_session);
        self.sessions.insert(
            local_id,
            Session {
                local_id,
                peer_id: peer_session,
                state: CallState::WaitConnect,
                call_serial: avps.call_serial_number.unwrap_or(0),
                created: now,
                calling_number: avps.calling_number.clone(),
                called_number: avps.called_number.clone(),
            },
        );
    }

    fn on_iccn(&mut self, now: Instant, ctx: &mut Ctx<'_>, session_id: u16, message: &Message) {
        let Some(session) = self.sessions.get_mut(&session_id) else {
            ctx.stats.unknown_session += 1;
            return;
        };
        if session.state != CallState::WaitConnect {
            ctx.stats.unexpected += 1;
            return;
        }
        if let Some(problem) = &message.problem {
            ctx.stats.invalid += 1;
            self.close_session(now, ctx, session_id, &problem.result_code());
            return;
        }
        session.state = CallState::Established;
        let session = session.clone();
        self.session_up(ctx, &session, message);
    }

    /// A CDN from the peer (either role). The header names our session, or is 0
    /// when the peer clears a call before it learned our id: then its Assigned
    /// Session ID names the call. Honoured even if the message has a problem.
    pub(crate) fn on_cdn(&mut self, ctx: &mut Ctx<'_>, session_id: u16, message: &Message) {
        let local_id = match session_id {
            0 => message.avps.assigned_session_id.and_then(|peer_id| {
                self.sessions
                    .values()
                    .find(|s| s.peer_id == peer_id)
                    .map(|s| s.local_id)
            }),
            id => Some(id),
        };
        let Some(session) = local_id.and_then(|id| self.sessions.remove(&id)) else {
            ctx.stats.unknown_session += 1;
            return;
        };
        let cause = match &message.avps.result_code {
            Some(result) => format!("peer CDN: {}", result.describe(false)),
            None => "peer CDN without a result code".to_string(),
        };
        self.session_down(ctx, &session, cause);
    }

    fn on_link_report(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        session_id: u16,
        message: &Message,
    ) {
        let Some(session) = self.sessions.get(&session_id) else {
            ctx.stats.unknown_session += 1;
            return;
        };
        if let Some(problem) = &message.problem {
            ctx.stats.invalid += 1;
            self.close_session(now, ctx, session_id, &problem.result_code());
            return;
        }
        let session = self.session_ref(session);
        let avps = &message.avps;
        if let Some(errors) = avps.call_errors {
            ctx.stats.wen_received += 1;
            ctx.events.push_back(Event::WanError { session, errors });
        }
        if let Some((send_accm, receive_accm)) = avps.accm {
            ctx.stats.sli_received += 1;
            ctx.events.push_back(Event::LinkInfo {
                session,
                send_accm,
                receive_accm,
            });
        }
    }
}
