//! The golden captures replayed through whole links.
//!
//! ikev1-natt (pppd client `alice`/`alicepass` against pppd LNS `l2tpd`, MS-CHAPv2):
//! our server takes the client's frames and answers, frame for frame, what the
//! capture's LNS answered — except its own LCP request, which has no ACCM (L2TP has
//! no async framing) and another magic number, so the client's Ack of it is built
//! from ours. Our client does the same against the LNS's frames.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{NATT, Scripted, capture_ppp};
use crate::aaa::{AuthBackend, AuthResult, LocalUsers, Password, Pool, RequestId};
use crate::ppp::{AuthMethod, ClientConfig, DownReason, Event, Link, LinkUp, ServerConfig, frame};
use crate::wire::ppp::{Frame, Packet, Protocol, code};
use crate::wire::test_util::hex;

/// Events of a link, frames split from the rest.
fn drain(link: &mut Link) -> (Vec<Vec<u8>>, Vec<Event>) {
    let (mut frames, mut others) = (Vec::new(), Vec::new());
    while let Some(e) = link.poll_event() {
        match e {
            Event::Send(f) => frames.push(f),
            other => others.push(other),
        }
    }
    (frames, others)
}

/// The Configure-Ack a peer would send for our Configure-Request `frame`.
fn ack_of(request: &[u8]) -> Vec<u8> {
    let f = Frame::new_checked(request).unwrap();
    let pkt = Packet::new_checked(f.payload()).unwrap();
    assert_eq!(pkt.code(), code::CONFIGURE_REQUEST);
    let mut payload = f.payload().to_vec();
    payload[0] = code::CONFIGURE_ACK;
    frame(f.protocol(), &payload)
}

fn natt(number: usize) -> Vec<u8> {
    capture_ppp(NATT, number)
}

#[test]
fn server_answers_the_real_client_like_the_captured_lns() {
    let t = Instant::now();
    let mut cfg = ServerConfig::new(Ipv4Addr::new(10, 97, 0, 1));
    cfg.auth = vec![AuthMethod::MsChapV2, AuthMethod::Chap, AuthMethod::Pap];
    cfg.name = "l2tpd".into();
    cfg.timing.echo_interval = None;
    // Entropy in the order the link draws it: LCP first Identifier (so its first
    // request is 1), the magic-number seed, the CHAP Identifier (one below 0x57) and
    // challenge of frame 23, then the IPCP first Identifier.
    let mut script = vec![0x00];
    script.extend([7; 8]);
    script.push(0x56);
    script.extend(hex("8ba5021fd4b0413bbdfc5f5078a5aefe"));
    script.push(0x00);
    let mut server = Link::server_with_entropy(cfg, t, Box::new(Scripted::new(&script)));
    let mut users = LocalUsers::new();
    users
        .add("alice", Password::from("alicepass"), None)
        .unwrap();
    let mut pool = Pool::parse("10.97.0.10-10.97.0.20").unwrap();

    let (ours, _) = drain(&mut server);
    assert_eq!(ours.len(), 1);
    // Frame 19, the client's request; our Ack is frame 21 byte for byte.
    server.input(t, &natt(19));
    assert_eq!(drain(&mut server).0, [natt(21)]);
    // The client acks our request (its frame 22 acked the LNS's own): CHAP starts
    // with frame 23 byte for byte.
    server.input(t, &ack_of(&ours[0]));
    assert_eq!(drain(&mut server).0, [natt(23)]);
    // Frame 24, the Response: the backend is asked, nothing is sent yet.
    server.input(t, &natt(24));
    let (frames, events) = drain(&mut server);
    assert!(frames.is_empty());
    let [Event::Authenticate(request)] = &events[..] else {
        panic!("{events:?}")
    };
    users.submit(RequestId(1), request.clone());
    let (_, mut answer) = users.poll().unwrap();
    if let AuthResult::Accept { attributes } = &mut answer {
        pool.assign(attributes).unwrap();
    }
    assert!(server.auth_result(t, answer));
    // Success (frame 25) and our IPCP request (frame 26), byte for byte.
    assert_eq!(drain(&mut server).0, [natt(25), natt(26)]);
    // Frame 27 asks for 0.0.0.0: Nak with the pool address (frame 28).
    server.input(t, &natt(27));
    assert_eq!(drain(&mut server).0, [natt(28)]);
    // Frame 29 acks our request, frame 30 asks for 10.97.0.10: Ack (frame 31), Up.
    server.input(t, &natt(29));
    server.input(t, &natt(30));
    let (frames, events) = drain(&mut server);
    assert_eq!(frames, [natt(31)]);
    let [Event::Up(up)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(
        *up,
        LinkUp {
            peer_address: Ipv4Addr::new(10, 97, 0, 10),
            local_address: Ipv4Addr::new(10, 97, 0, 1),
            dns: vec![],
            mru: 1400,
            local_mru: 1400,
            acfc: false,
            pfc: false,
            user: Some("alice".into()),
            auth: Some(AuthMethod::MsChapV2),
        }
    );
    // Frame 32 is an ICMP echo: data, not ours to handle, and not Protocol-Rejected.
    server.input(t, &natt(32));
    assert!(drain(&mut server).0.is_empty());
    assert_eq!(server.stats().out_of_phase, 1);
    // Frame 38, "User request": Terminate-Ack (frame 39), Down, and Finished one
    // Restart period later.
    server.input(t, &natt(38));
    let (frames, events) = drain(&mut server);
    assert_eq!(frames, [natt(39)]);
    assert!(matches!(
        &events[..],
        [Event::Down(DownReason::PeerTerminated(text))] if text == "User request"
    ));
    let end = server.next_timeout().unwrap();
    assert_eq!(end - t, Duration::from_secs(3));
    server.handle_timeout(end);
    assert!(matches!(drain(&mut server).1[..], [Event::Finished]));
    assert_eq!(server.next_timeout(), None);
}

#[test]
fn client_answers_the_real_lns_like_the_captured_pppd() {
    let t = Instant::now();
    let mut cfg = ClientConfig::new("alice", Password::from("alicepass"));
    cfg.request_dns = false;
    cfg.timing.echo_interval = None;
    // LCP first Identifier, magic seed, the peer challenge of frame 24, IPCP first
    // Identifier.
    let mut script = vec![0x00];
    script.extend([9; 8]);
    script.extend(hex("7d1f07b96a8afefca6c0a674dfa122a3"));
    script.push(0x00);
    let mut client = Link::client_with_entropy(cfg, t, Box::new(Scripted::new(&script)));
    let (ours, _) = drain(&mut client);
    // Frame 20, the LNS's request with MS-CHAPv2: our Ack is frame 22.
    client.input(t, &natt(20));
    assert_eq!(drain(&mut client).0, [natt(22)]);
    client.input(t, &ack_of(&ours[0]));
    assert!(
        drain(&mut client).0.is_empty(),
        "the peer waits for the Challenge"
    );
    // Frame 23, the Challenge: our Response is frame 24.
    client.input(t, &natt(23));
    assert_eq!(drain(&mut client).0, [natt(24)]);
    // Frame 25, the Success whose S= we check: IPCP starts with frame 27.
    client.input(t, &natt(25));
    assert_eq!(drain(&mut client).0, [natt(27)]);
    // Frame 26 (LNS request): Ack is frame 29. Frame 28 (Nak): new request, frame 30.
    client.input(t, &natt(26));
    assert_eq!(drain(&mut client).0, [natt(29)]);
    client.input(t, &natt(28));
    assert_eq!(drain(&mut client).0, [natt(30)]);
    // Frame 31 acks it: up with 10.97.0.10.
    client.input(t, &natt(31));
    let (_, events) = drain(&mut client);
    let [Event::Up(up)] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(up.local_address, Ipv4Addr::new(10, 97, 0, 10));
    assert_eq!(up.peer_address, Ipv4Addr::new(10, 97, 0, 1));
    // Closing sends frame 38 ("User request", LCP Identifier 2); frame 39 finishes.
    client.close(t, "User request");
    let (frames, events) = drain(&mut client);
    assert_eq!(frames, [natt(38)]);
    assert!(matches!(&events[..], [Event::Down(DownReason::Closed(_))]));
    client.input(t, &natt(39));
    assert!(matches!(drain(&mut client).1[..], [Event::Finished]));
}

#[test]
fn compressed_forms_of_real_frames_are_understood() {
    // The client's LCP request without FF 03 (the ACFC form) is answered in full.
    let t = Instant::now();
    let mut server = Link::server(ServerConfig::new(Ipv4Addr::new(10, 97, 0, 1)), t);
    drain(&mut server);
    let full = natt(19);
    server.input(t, &full[2..]);
    let (frames, _) = drain(&mut server);
    assert_eq!(frames, [natt(21)], "answered with a full FF 03 header");
    assert_eq!(
        Frame::new_checked(&frames[0][..]).unwrap().protocol(),
        Protocol::LCP
    );
    // The ICMP frame 32 with a one-octet protocol (the PFC form): IPv4, not ours.
    let icmp = natt(32);
    server.input(t, &icmp[3..]);
    assert_eq!(server.stats().out_of_phase, 1);
    assert_eq!(server.stats().malformed, 0);
}
