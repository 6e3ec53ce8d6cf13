//! CHAP-MD5 and MS-CHAPv2 against the golden captures and against each other.

use super::*;
use crate::aaa::{AuthBackend, LocalUsers, RequestId};
use crate::ppp::SeededEntropy;
use crate::ppp::tests::{CBC, NATT, Scripted, capture_ppp};
use crate::wire::ppp::Frame;
use crate::wire::test_util::hex;
use std::time::Duration;

fn timing() -> AuthTiming {
    AuthTiming {
        restart: Duration::from_secs(3),
        max_tries: 3,
        timeout: Duration::from_secs(30),
    }
}

/// The CHAP packet of a captured frame (after FF 03 c2 23).
fn chap_packet(decrypted: &str, number: usize) -> Vec<u8> {
    let frame = capture_ppp(decrypted, number);
    let frame = Frame::new_checked(&frame[..]).unwrap();
    assert_eq!(frame.protocol(), Protocol::CHAP);
    frame.payload().to_vec()
}

fn alice() -> LocalUsers {
    let mut users = LocalUsers::new();
    users
        .add("alice", Password::from("alicepass"), None)
        .unwrap();
    users
}

fn outputs_server(m: &mut ChapAuthenticator) -> Vec<AuthOutput> {
    std::iter::from_fn(|| m.poll()).collect()
}

fn outputs_peer(m: &mut ChapPeer) -> Vec<AuthOutput> {
    std::iter::from_fn(|| m.poll()).collect()
}

fn sent(outs: &[AuthOutput]) -> Vec<Vec<u8>> {
    outs.iter()
        .filter_map(|o| match o {
            AuthOutput::Send(Protocol::CHAP, p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

/// Independent oracle: Python `hashlib.md5(bytes([1]) + b"secret" + bytes(range(16)))`.
#[test]
fn md5_response_rfc1994_formula() {
    let challenge: Vec<u8> = (0..16).collect();
    assert_eq!(
        md5_response(1, b"secret", &challenge).to_vec(),
        hex("740e86463bda3a4d7017d6e0fba0699d")
    );
}

// ikev1-psk-transport-cbc-sha1-modp2048: Challenge frame 23 (id 0x16, 20-octet
// challenge, name "l2tpd"), Response frame 24, Success frame 25 "Access granted".
#[test]
fn capture_chap_md5_server_verifies_real_response() {
    let challenge_pkt = chap_packet(CBC, 23);
    let response_pkt = chap_packet(CBC, 24);
    let challenge = Packet::new_checked(&challenge_pkt[..]).unwrap();
    let (value, name) = challenge.chap_value_and_name().unwrap();
    assert_eq!(name, b"l2tpd");
    let response = Packet::new_checked(&response_pkt[..]).unwrap();
    assert_eq!(response.identifier(), 0x16);
    let (answer, user) = response.chap_value_and_name().unwrap();
    assert_eq!(user, b"alice");
    assert_eq!(answer.to_vec(), hex("527f3adb4bc859d4a3a5ac7f32bc2420"));
    let mut users = alice();
    users.submit(
        RequestId(1),
        AuthRequest {
            user: "alice".into(),
            method: Credentials::Chap {
                id: 0x16,
                challenge: value.to_vec(),
                response: answer.try_into().unwrap(),
            },
        },
    );
    assert!(matches!(users.poll(), Some((_, AuthResult::Accept { .. }))));
    assert_eq!(
        packet(chap_code::SUCCESS, 0x16, SUCCESS_MESSAGE.as_bytes()),
        chap_packet(CBC, 25),
        "our Success is the one the capture's LNS sent"
    );
}

#[test]
fn capture_chap_md5_peer_answers_like_pppd() {
    let now = Instant::now();
    let mut peer = ChapPeer::start(
        AuthMethod::Chap,
        "alice",
        &Password::from("alicepass"),
        timing(),
        now,
    );
    let mut rng = SeededEntropy::new(5);
    peer.input(now, &chap_packet(CBC, 23), &mut rng);
    assert_eq!(sent(&outputs_peer(&mut peer)), [chap_packet(CBC, 24)]);
    peer.input(now, &chap_packet(CBC, 25), &mut rng);
    assert!(matches!(
        &outputs_peer(&mut peer)[..],
        [AuthOutput::Done(Ok(_))]
    ));
}

/// The authenticator challenge of ikev1-natt frame 23, and our id seed one below 0x57
/// (the machine increments before sending).
fn natt_entropy() -> Scripted {
    let mut script = vec![0x56];
    script.extend(hex("8ba5021fd4b0413bbdfc5f5078a5aefe"));
    Scripted::new(&script)
}

// ikev1-natt frames 23 (Challenge), 24 (Response), 25 (Success "S=43D7… M=Access
// granted"): our server, given the capture's challenge, sends the same Challenge,
// accepts the real Response and sends byte for byte the same Success.
#[test]
fn capture_mschapv2_server_reproduces_the_exchange() {
    let now = Instant::now();
    let mut rng = natt_entropy();
    let mut server =
        ChapAuthenticator::start(AuthMethod::MsChapV2, "l2tpd", timing(), now, &mut rng);
    assert_eq!(sent(&outputs_server(&mut server)), [chap_packet(NATT, 23)]);
    server.input(now, &chap_packet(NATT, 24));
    let outs = outputs_server(&mut server);
    let [AuthOutput::Verify(request)] = &outs[..] else {
        panic!("{outs:?}")
    };
    assert_eq!(request.user, "alice");
    let mut users = alice();
    users.submit(RequestId(1), request.clone());
    let (_, result) = users.poll().unwrap();
    server.result(now, result, &mut rng);
    let outs = outputs_server(&mut server);
    assert_eq!(sent(&outs), [chap_packet(NATT, 25)]);
    assert!(matches!(&outs[1], AuthOutput::Done(Ok(g)) if g.user.as_deref() == Some("alice")));
    // A retransmitted Response gets the same Success again.
    server.input(now, &chap_packet(NATT, 24));
    assert_eq!(sent(&outputs_server(&mut server)), [chap_packet(NATT, 25)]);
}

#[test]
fn capture_mschapv2_peer_reproduces_the_response_and_checks_success() {
    let now = Instant::now();
    let mut peer = ChapPeer::start(
        AuthMethod::MsChapV2,
        "alice",
        &Password::from("alicepass"),
        timing(),
        now,
    );
    let mut rng = Scripted::new(&hex("7d1f07b96a8afefca6c0a674dfa122a3"));
    peer.input(now, &chap_packet(NATT, 23), &mut rng);
    assert_eq!(sent(&outputs_peer(&mut peer)), [chap_packet(NATT, 24)]);
    // The same Challenge again: the same Response, no new peer challenge.
    peer.input(now, &chap_packet(NATT, 23), &mut rng);
    assert_eq!(sent(&outputs_peer(&mut peer)), [chap_packet(NATT, 24)]);
    peer.input(now, &chap_packet(NATT, 25), &mut rng);
    assert!(matches!(
        &outputs_peer(&mut peer)[..],
        [AuthOutput::Done(Ok(_))]
    ));
}

#[test]
fn mschapv2_peer_refuses_a_forged_success() {
    let now = Instant::now();
    let mut peer = ChapPeer::start(
        AuthMethod::MsChapV2,
        "alice",
        &Password::from("alicepass"),
        timing(),
        now,
    );
    let mut rng = SeededEntropy::new(1);
    peer.input(now, &chap_packet(NATT, 23), &mut rng);
    outputs_peer(&mut peer);
    // Frame 25's S= was computed for the capture's peer challenge, not ours.
    peer.input(now, &chap_packet(NATT, 25), &mut rng);
    assert!(matches!(
        &outputs_peer(&mut peer)[..],
        [AuthOutput::Done(Err(AuthFailure::BadAuthenticatorResponse))]
    ));
}

fn run_pair(method: AuthMethod, password: &str) -> (Vec<AuthOutput>, Vec<AuthOutput>) {
    let now = Instant::now();
    let mut rng = SeededEntropy::new(7);
    let mut server = ChapAuthenticator::start(method, "sekisho", timing(), now, &mut rng);
    let mut peer = ChapPeer::start(method, "alice", &Password::from(password), timing(), now);
    let mut users = alice();
    let (mut server_done, mut peer_done) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        for out in outputs_server(&mut server) {
            match out {
                AuthOutput::Send(_, p) => peer.input(now, &p, &mut rng),
                AuthOutput::Verify(req) => users.submit(RequestId(0), req),
                done => server_done.push(done),
            }
        }
        while let Some((_, result)) = users.poll() {
            server.result(now, result, &mut rng);
        }
        for out in outputs_peer(&mut peer) {
            match out {
                AuthOutput::Send(_, p) => server.input(now, &p),
                done => peer_done.push(done),
            }
        }
    }
    (server_done, peer_done)
}

#[test]
fn md5_and_mschapv2_pairs_agree_on_success_and_failure() {
    for method in [AuthMethod::Chap, AuthMethod::MsChapV2] {
        let (s, p) = run_pair(method, "alicepass");
        assert!(
            matches!(&s[..], [AuthOutput::Done(Ok(_))]),
            "{method}: {s:?}"
        );
        assert!(
            matches!(&p[..], [AuthOutput::Done(Ok(_))]),
            "{method}: {p:?}"
        );
        let (s, p) = run_pair(method, "wrong");
        assert!(
            matches!(&s[..], [AuthOutput::Done(Err(AuthFailure::Rejected(_)))]),
            "{method}: {s:?}"
        );
        assert!(
            matches!(&p[..], [AuthOutput::Done(Err(AuthFailure::Rejected(_)))]),
            "{method}: {p:?}"
        );
    }
}

#[test]
fn mschapv2_failure_message_has_e691_and_a_new_challenge() {
    let now = Instant::now();
    let mut rng = SeededEntropy::new(8);
    let mut server = ChapAuthenticator::start(AuthMethod::MsChapV2, "gw", timing(), now, &mut rng);
    let challenge = sent(&outputs_server(&mut server)).remove(0);
    let mut peer = ChapPeer::start(
        AuthMethod::MsChapV2,
        "alice",
        &Password::from("nope"),
        timing(),
        now,
    );
    peer.input(now, &challenge, &mut rng);
    server.input(now, &sent(&outputs_peer(&mut peer))[0]);
    outputs_server(&mut server);
    server.result(now, AuthResult::reject("bad"), &mut rng);
    let failure = sent(&outputs_server(&mut server)).remove(0);
    let text = String::from_utf8(failure[4..].to_vec()).unwrap();
    assert!(text.starts_with("E=691 R=0 C="), "{text}");
    assert!(text.ends_with(" V=3 M=Authentication failed"), "{text}");
    assert_eq!(
        text.len(),
        "E=691 R=0 C= V=3 M=Authentication failed".len() + 32
    );
}

#[test]
fn accept_without_authenticator_response_fails_mschapv2() {
    let now = Instant::now();
    let mut rng = natt_entropy();
    let mut server =
        ChapAuthenticator::start(AuthMethod::MsChapV2, "l2tpd", timing(), now, &mut rng);
    outputs_server(&mut server);
    server.input(now, &chap_packet(NATT, 24));
    outputs_server(&mut server);
    server.result(
        now,
        AuthResult::Accept {
            attributes: Attributes::default(),
        },
        &mut rng,
    );
    let outs = outputs_server(&mut server);
    assert_eq!(sent(&outs)[0][0], chap_code::FAILURE);
    assert!(matches!(
        &outs[1],
        AuthOutput::Done(Err(AuthFailure::NoAuthenticatorResponse))
    ));
}

#[test]
fn challenge_is_retransmitted_with_new_id_then_gives_up() {
    let start = Instant::now();
    let mut rng = SeededEntropy::new(9);
    let mut server = ChapAuthenticator::start(AuthMethod::Chap, "gw", timing(), start, &mut rng);
    let mut challenges = sent(&outputs_server(&mut server));
    let mut last = Vec::new();
    while let Some(t) = server.next_timeout() {
        server.handle_timeout(t, &mut rng);
        let outs = outputs_server(&mut server);
        challenges.extend(sent(&outs));
        last = outs;
    }
    assert_eq!(challenges.len(), 3, "max_tries challenges");
    assert_ne!(challenges[0][1], challenges[1][1], "new identifier");
    assert_ne!(challenges[0][5..21], challenges[1][5..21], "new challenge");
    assert!(matches!(
        &last[..],
        [AuthOutput::Done(Err(AuthFailure::Timeout))]
    ));
}

#[test]
fn response_to_an_old_challenge_is_ignored() {
    let now = Instant::now();
    let mut rng = SeededEntropy::new(10);
    let mut server = ChapAuthenticator::start(AuthMethod::Chap, "gw", timing(), now, &mut rng);
    let first = sent(&outputs_server(&mut server)).remove(0);
    server.handle_timeout(now + Duration::from_secs(3), &mut rng);
    outputs_server(&mut server);
    let mut peer = ChapPeer::start(
        AuthMethod::Chap,
        "alice",
        &Password::from("x"),
        timing(),
        now,
    );
    peer.input(now, &first, &mut rng);
    server.input(now, &sent(&outputs_peer(&mut peer))[0]);
    assert!(outputs_server(&mut server).is_empty());
    assert!(!server.is_verifying());
}

#[test]
fn backend_silence_fails_with_timeout() {
    let now = Instant::now();
    let mut rng = SeededEntropy::new(11);
    let mut server = ChapAuthenticator::start(AuthMethod::Chap, "gw", timing(), now, &mut rng);
    let challenge = sent(&outputs_server(&mut server)).remove(0);
    let mut peer = ChapPeer::start(
        AuthMethod::Chap,
        "alice",
        &Password::from("x"),
        timing(),
        now,
    );
    peer.input(now, &challenge, &mut rng);
    server.input(now, &sent(&outputs_peer(&mut peer))[0]);
    assert!(server.is_verifying());
    outputs_server(&mut server);
    server.handle_timeout(now + Duration::from_secs(30), &mut rng);
    let outs = outputs_server(&mut server);
    assert_eq!(sent(&outs)[0][0], chap_code::FAILURE);
    assert!(matches!(
        &outs[1],
        AuthOutput::Done(Err(AuthFailure::Timeout))
    ));
    // A late answer changes nothing.
    server.result(now, AuthResult::reject("late"), &mut rng);
    assert!(outputs_server(&mut server).is_empty());
}

#[test]
fn peer_debug_hides_the_password() {
    let peer = ChapPeer::start(
        AuthMethod::MsChapV2,
        "alice",
        &Password::from("hunter2"),
        timing(),
        Instant::now(),
    );
    assert!(!format!("{peer:?}").contains("hunter2"));
}

#[test]
fn peer_repeats_its_response_until_answered_then_gives_up() {
    let start = Instant::now();
    let mut rng = SeededEntropy::new(12);
    let mut server = ChapAuthenticator::start(AuthMethod::Chap, "gw", timing(), start, &mut rng);
    let challenge = sent(&outputs_server(&mut server)).remove(0);
    let mut peer = ChapPeer::start(
        AuthMethod::Chap,
        "alice",
        &Password::from("x"),
        timing(),
        start,
    );
    peer.input(start, &challenge, &mut rng);
    let mut responses = sent(&outputs_peer(&mut peer));
    let mut last = Vec::new();
    while let Some(t) = peer.next_timeout() {
        peer.handle_timeout(t);
        let outs = outputs_peer(&mut peer);
        responses.extend(sent(&outs));
        last = outs;
    }
    assert_eq!(responses.len(), 3, "max_tries responses");
    assert!(responses.iter().all(|r| *r == responses[0]));
    assert!(matches!(
        &last[..],
        [AuthOutput::Done(Err(AuthFailure::Timeout))]
    ));
}
