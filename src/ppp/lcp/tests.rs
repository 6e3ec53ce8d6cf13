//! LCP option logic against the golden capture, and Echo / Protocol-Reject.

use super::*;
use crate::ppp::fsm::{packet, put_option};
use crate::ppp::tests::{NATT, capture_ppp};
use crate::wire::ppp::{Frame, Packet};
use std::time::Duration;

fn server_cfg(auth: &[AuthMethod]) -> LcpConfig {
    LcpConfig {
        mru: 1400,
        auth: auth.to_vec(),
        authenticator: true,
        accept_compression: true,
        request_compression: false,
        loopback_limit: 5,
    }
}

fn client_cfg(auth: &[AuthMethod]) -> LcpConfig {
    LcpConfig {
        authenticator: false,
        ..server_cfg(auth)
    }
}

fn options(cfg: LcpConfig, seed: u64) -> LcpOptions {
    LcpOptions::new(cfg, &mut SeededEntropy::new(seed))
}

fn opts(list: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in list {
        put_option(&mut out, *t, v);
    }
    out
}

fn lcp_options_of(decrypted: &str, number: usize) -> Vec<u8> {
    let frame = capture_ppp(decrypted, number);
    let frame = Frame::new_checked(&frame[..]).unwrap();
    assert_eq!(frame.protocol(), Protocol::LCP);
    Packet::new_checked(frame.payload())
        .unwrap()
        .data()
        .to_vec()
}

const ALL: [AuthMethod; 3] = [AuthMethod::MsChapV2, AuthMethod::Chap, AuthMethod::Pap];

#[test]
fn server_request_has_mru_auth_and_magic() {
    let mut server = options(server_cfg(&ALL), 1);
    let request = server.request();
    let list: Vec<_> = OptionIter::new(&request)
        .map(|o| o.unwrap().option_type)
        .collect();
    assert_eq!(
        list,
        [
            lcp_option::MRU,
            lcp_option::AUTH_PROTOCOL,
            lcp_option::MAGIC_NUMBER
        ]
    );
    assert_eq!(&request[..4], [1, 4, 0x05, 0x78]);
    assert_eq!(&request[4..9], [3, 5, 0xc2, 0x23, 0x81]);
}

// ikev1-natt frame 19: the pppd client's request (MRU 1400, ACCM 0, Magic 0x211e825e).
#[test]
fn server_acks_the_real_client_request() {
    let mut server = options(server_cfg(&ALL), 1);
    assert_eq!(server.judge(&lcp_options_of(NATT, 19), false), Verdict::Ack);
    assert_eq!(
        *server.peer(),
        PeerOptions {
            mru: 1400,
            magic: 0x211e_825e,
            ..PeerOptions::default()
        }
    );
}

// ikev1-natt frame 20: the LNS's request (MRU 1400, ACCM 0, Auth MS-CHAPv2, Magic).
#[test]
fn client_acks_the_real_server_request() {
    let mut client = options(client_cfg(&ALL), 2);
    assert_eq!(client.judge(&lcp_options_of(NATT, 20), false), Verdict::Ack);
    assert_eq!(client.peer().auth, Some(AuthMethod::MsChapV2));
    assert_eq!(client.peer().magic, 0xa72d_3877);
}

#[test]
fn client_naks_an_unsupported_method_with_its_choice() {
    let mut client = options(client_cfg(&[AuthMethod::Pap]), 3);
    let verdict = client.judge(&lcp_options_of(NATT, 20), false);
    assert_eq!(
        verdict,
        Verdict::Nak(opts(&[(lcp_option::AUTH_PROTOCOL, &[0xc0, 0x23])]))
    );
    let mut none = options(client_cfg(&[]), 3);
    assert!(matches!(
        none.judge(&lcp_options_of(NATT, 20), false),
        Verdict::Reject(_)
    ));
}

#[test]
fn server_falls_back_through_its_methods() {
    let mut server = options(server_cfg(&ALL), 4);
    assert_eq!(server.auth(), Some(AuthMethod::MsChapV2));
    // The peer suggests PAP: allowed and untried, so PAP.
    let pap = opts(&[(lcp_option::AUTH_PROTOCOL, &[0xc0, 0x23])]);
    assert_eq!(server.naked(&pap), Ok(()));
    assert_eq!(server.auth(), Some(AuthMethod::Pap));
    // It suggests something unknown: the next untried in our order, CHAP.
    let eap = opts(&[(lcp_option::AUTH_PROTOCOL, &[0xc2, 0x27])]);
    assert_eq!(server.naked(&eap), Ok(()));
    assert_eq!(server.auth(), Some(AuthMethod::Chap));
    assert_eq!(server.naked(&eap), Err(NO_COMMON_AUTH));
    // A suggestion outside the configured list is not taken.
    let mut strict = options(server_cfg(&[AuthMethod::MsChapV2, AuthMethod::Chap]), 4);
    assert_eq!(strict.naked(&pap), Ok(()));
    assert_eq!(strict.auth(), Some(AuthMethod::Chap));
    assert_eq!(
        strict.rejected(&opts(&[(3, &[0xc2, 0x23, 5])])),
        Err(AUTH_REFUSED)
    );
}

#[test]
fn server_rejects_being_asked_to_authenticate() {
    let mut server = options(server_cfg(&ALL), 5);
    let request = opts(&[
        (lcp_option::AUTH_PROTOCOL, &[0xc0, 0x23]),
        (5, &[1, 2, 3, 4]),
    ]);
    assert_eq!(
        server.judge(&request, false),
        Verdict::Reject(opts(&[(lcp_option::AUTH_PROTOCOL, &[0xc0, 0x23])]))
    );
}

#[test]
fn bad_values_are_nakked_or_rejected() {
    let mut server = options(server_cfg(&ALL), 6);
    let small_mru = opts(&[(lcp_option::MRU, &[0, 64])]);
    assert_eq!(
        server.judge(&small_mru, false),
        Verdict::Nak(opts(&[(lcp_option::MRU, &[0, 128])]))
    );
    let zero_magic = opts(&[(lcp_option::MAGIC_NUMBER, &[0, 0, 0, 0])]);
    assert!(matches!(server.judge(&zero_magic, false), Verdict::Nak(_)));
    for odd in [
        opts(&[(lcp_option::MRU, &[5])]),
        opts(&[(lcp_option::ACCM, &[0, 0])]),
        opts(&[(lcp_option::QUALITY_PROTOCOL, &[0xc0, 0x25])]),
        opts(&[(13, &[6])]), // Callback
        opts(&[(lcp_option::PFC, &[1])]),
    ] {
        assert_eq!(server.judge(&odd, false), Verdict::Reject(odd.clone()));
    }
    let compression = opts(&[(lcp_option::PFC, &[]), (lcp_option::ACFC, &[])]);
    assert_eq!(server.judge(&compression, false), Verdict::Ack);
    assert!(server.peer().pfc && server.peer().acfc);
    let mut plain = options(
        LcpConfig {
            accept_compression: false,
            ..server_cfg(&ALL)
        },
        6,
    );
    assert_eq!(
        plain.judge(&compression, false),
        Verdict::Reject(compression.clone())
    );
    // Max-Failure: the Nak becomes a Reject.
    assert_eq!(
        server.judge(&small_mru, true),
        Verdict::Reject(small_mru.clone())
    );
}

#[test]
fn our_own_magic_is_nakked_alone_and_repeated_naks_mean_loopback() {
    let mut server = options(server_cfg(&ALL), 7);
    let own = server.request();
    let Verdict::Nak(nak) = server.judge(&own, false) else {
        panic!("expected a Nak");
    };
    let naked: Vec<_> = OptionIter::new(&nak).map(|o| o.unwrap()).collect();
    assert_eq!(naked.len(), 1);
    assert_eq!(naked[0].option_type, lcp_option::MAGIC_NUMBER);
    assert_ne!(naked[0].value_u32(), Some(server.magic()));
    for _ in 0..4 {
        let before = server.magic();
        assert_eq!(server.naked(&nak), Ok(()));
        assert_ne!(server.magic(), before, "a new magic for the next request");
    }
    assert_eq!(server.naked(&nak), Err(LOOPBACK));
}

#[test]
fn rejects_drop_our_options() {
    let mut client = options(
        LcpConfig {
            request_compression: true,
            ..client_cfg(&ALL)
        },
        8,
    );
    let request = client.request();
    assert_eq!(client.rejected(&request), Ok(()));
    assert_eq!(client.request(), Vec::<u8>::new());
    assert_eq!(client.mru(), DEFAULT_MRU);
    assert_eq!(client.magic(), 0);
}

/// Two LCPs (server, client) exchanging packets until quiet.
fn opened(now: Instant) -> (Lcp, Lcp) {
    let keepalive = Keepalive::new(Some(Duration::from_secs(10)), 3);
    let mut rng = SeededEntropy::new(9);
    let mut a = Lcp::new(
        server_cfg(&ALL),
        FsmConfig::default(),
        keepalive.clone(),
        &mut rng,
    );
    let mut b = Lcp::new(client_cfg(&ALL), FsmConfig::default(), keepalive, &mut rng);
    for l in [&mut a, &mut b] {
        l.fsm_mut().open(now);
        l.fsm_mut().up(now);
    }
    for _ in 0..10 {
        let to_b = sends(&mut a, now);
        let to_a = sends(&mut b, now);
        for p in to_b {
            b.input(now, &p);
        }
        for p in to_a {
            a.input(now, &p);
        }
    }
    assert_eq!(a.fsm().state(), State::Opened);
    assert_eq!(b.fsm().state(), State::Opened);
    (a, b)
}

fn sends(l: &mut Lcp, now: Instant) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| l.poll_output(now))
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn echo_request_is_answered_with_our_magic() {
    let now = Instant::now();
    let (mut a, b) = opened(now);
    let peer_magic = b.options().magic().to_be_bytes();
    let mut data = peer_magic.to_vec();
    data.extend_from_slice(b"ping");
    a.input(now, &packet(code::ECHO_REQUEST, 33, &data));
    let mut expected = a.options().magic().to_be_bytes().to_vec();
    expected.extend_from_slice(b"ping");
    assert_eq!(
        sends(&mut a, now),
        [packet(code::ECHO_REPLY, 33, &expected)]
    );
    // Our own magic in a request: a looped line; not answered.
    let own = a.options().magic().to_be_bytes();
    a.input(now, &packet(code::ECHO_REQUEST, 34, &own));
    assert!(sends(&mut a, now).is_empty());
}

#[test]
fn keepalive_requests_are_answered_by_the_peer_and_silence_kills() {
    let t0 = Instant::now();
    let (mut a, mut b) = opened(t0);
    let t1 = a.next_timeout().unwrap();
    assert_eq!(t1 - t0, Duration::from_secs(10));
    assert_eq!(a.handle_timeout(t1), None);
    let request = sends(&mut a, t1);
    assert_eq!(request[0][0], code::ECHO_REQUEST);
    assert_eq!(a.echo_missed(), 1);
    b.input(t1, &request[0]);
    for p in sends(&mut b, t1) {
        a.input(t1, &p);
    }
    assert_eq!(a.echo_missed(), 0);
    // From now on nobody answers.
    let mut events = Vec::new();
    while let Some(t) = a.next_timeout() {
        if let Some(e) = a.handle_timeout(t) {
            events.push(e);
            break;
        }
        sends(&mut a, t);
    }
    assert_eq!(events, [LcpEvent::EchoTimeout]);
}

#[test]
fn protocol_reject_is_reported_and_sent_only_when_opened() {
    let now = Instant::now();
    let (mut a, _b) = opened(now);
    let data = [0x80, 0x57, 1, 2, 3];
    assert_eq!(
        a.input(now, &packet(code::PROTOCOL_REJECT, 1, &data)),
        Some(LcpEvent::ProtocolRejected(Protocol::IPV6CP))
    );
    a.protocol_reject(Protocol(0x80fd), &[1, 1, 0, 4]);
    let sent = sends(&mut a, now);
    assert_eq!(sent[0][0], code::PROTOCOL_REJECT);
    assert_eq!(&sent[0][4..], [0x80, 0xfd, 1, 1, 0, 4]);
    let mut rng = SeededEntropy::new(1);
    let mut idle = Lcp::new(
        server_cfg(&ALL),
        FsmConfig::default(),
        Keepalive::new(None, 3),
        &mut rng,
    );
    idle.protocol_reject(Protocol(0x80fd), &[]);
    assert!(sends(&mut idle, now).is_empty());
}

#[test]
fn code_rejected_echo_stops_keepalives() {
    let now = Instant::now();
    let (mut a, _b) = opened(now);
    assert!(a.next_timeout().is_some());
    a.input(
        now,
        &packet(code::CODE_REJECT, 1, &[code::ECHO_REQUEST, 1, 0, 8]),
    );
    assert_eq!(a.next_timeout(), None);
}
