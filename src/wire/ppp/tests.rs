//! Tests of `wire::ppp` on the decrypted PPP frames of the ikev1-natt capture.
//!
//! Every frame comes from decrypted.txt (ESP plaintext → UDP → L2TP data message →
//! PPP) and every asserted value is what this command prints for it:
//! `tshark -r tests/data/ikev1-natt.pcap -V <decode.sh options> -Y frame.number==N`

use super::*;
use crate::wire::l2tp;
use crate::wire::test_util::natt_l2tp;
use proptest::prelude::*;

/// The PPP frame inside ikev1-natt frame `number`.
fn ppp(number: usize) -> Vec<u8> {
    let message = natt_l2tp(number);
    let packet = l2tp::Packet::new_checked(&message[..]).unwrap();
    assert!(!packet.is_control());
    packet.payload().to_vec()
}

fn options(packet: &Packet<&[u8]>) -> Vec<(u8, Vec<u8>)> {
    packet
        .options()
        .map(|o| o.map(|o| (o.option_type, o.value.to_vec())))
        .collect::<Result<_>>()
        .unwrap()
}

// -Y frame.number==19: Address 0xff, Control 0x03, Protocol LCP (0xc021);
//   Code: Configuration Request (1), Identifier 1, Length 20;
//   MRU 1400 (type 1, len 4), ACCM 0x00000000 (type 2, len 6), Magic Number 0x211e825e (type 5, len 6)
#[test]
fn real_lcp_configure_request() {
    let bytes = ppp(19);
    let frame = Frame::new_checked(&bytes[..]).unwrap();
    assert!(frame.has_address_control());
    assert!(!frame.is_protocol_compressed());
    assert_eq!(frame.protocol(), Protocol::LCP);
    assert_eq!(frame.payload_offset(), 4);
    let packet = Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(packet.code(), code::CONFIGURE_REQUEST);
    assert_eq!(packet.identifier(), 1);
    assert_eq!(packet.len(), 20);
    let opts: Vec<ConfigOption<'_>> = packet.options().collect::<Result<_>>().unwrap();
    assert_eq!(opts.len(), 3);
    assert_eq!(
        (opts[0].option_type, opts[0].value_u16()),
        (lcp_option::MRU, Some(1400))
    );
    assert_eq!(
        (opts[1].option_type, opts[1].value_u32()),
        (lcp_option::ACCM, Some(0))
    );
    assert_eq!(
        (opts[2].option_type, opts[2].value_u32()),
        (lcp_option::MAGIC_NUMBER, Some(0x211e_825e))
    );
}

// -Y frame.number==20: LCP Configuration Request, Identifier 1, Length 25; options MRU 1400,
//   ACCM 0, Authentication Protocol CHAP (0xc223) Algorithm MS-CHAP-2 (129) (len 5),
//   Magic Number 0xa72d3877
#[test]
fn real_lcp_auth_protocol_option() {
    let bytes = ppp(20);
    let frame = Frame::new_checked(&bytes[..]).unwrap();
    let packet = Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(packet.len(), 25);
    let opts = options(&packet);
    assert_eq!(
        opts[2],
        (
            lcp_option::AUTH_PROTOCOL,
            vec![0xc2, 0x23, lcp_option::CHAP_MSCHAPV2]
        )
    );
    assert_eq!(
        opts[3],
        (lcp_option::MAGIC_NUMBER, vec![0xa7, 0x2d, 0x38, 0x77])
    );
}

// -Y frame.number==23: Protocol CHAP (0xc223); Code: Challenge (1), Identifier 87, Length 26,
//   Value Size 16, Value 8ba5021fd4b0413bbdfc5f5078a5aefe, Name l2tpd
// -Y frame.number==24: Response (2), Identifier 87, NAME='alice', 49-octet value (MS-CHAPv2)
#[test]
fn real_chap_challenge_and_response() {
    let bytes = ppp(23);
    let frame = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(frame.protocol(), Protocol::CHAP);
    let packet = Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(
        (packet.code(), packet.identifier(), packet.len()),
        (chap_code::CHALLENGE, 87, 26)
    );
    let (value, name) = packet.chap_value_and_name().unwrap();
    let want: [u8; 16] = 0x8ba5021fd4b0413bbdfc5f5078a5aefe_u128.to_be_bytes();
    assert_eq!(value, want);
    assert_eq!(name, b"l2tpd");

    let bytes = ppp(24);
    let frame = Frame::new_checked(&bytes[..]).unwrap();
    let packet = Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(
        (packet.code(), packet.identifier()),
        (chap_code::RESPONSE, 87)
    );
    let (value, name) = packet.chap_value_and_name().unwrap();
    assert_eq!(value.len(), 49);
    assert_eq!(&value[..4], &[0x7d, 0x1f, 0x07, 0xb9]);
    assert_eq!(name, b"alice");
}

// -Y frame.number==26: IPCP (0x8021) Configuration Request, Identifier 1, Length 10,
//   IP Address 10.97.0.1;  -Y frame.number==28: Configuration Nak, IP Address 10.97.0.10
#[test]
fn real_ipcp_request_and_nak() {
    for (number, code, address) in [
        (26, code::CONFIGURE_REQUEST, [10, 97, 0, 1]),
        (28, code::CONFIGURE_NAK, [10, 97, 0, 10]),
    ] {
        let bytes = ppp(number);
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.protocol(), Protocol::IPCP);
        let packet = Packet::new_checked(frame.payload()).unwrap();
        assert_eq!(
            (packet.code(), packet.identifier(), packet.len()),
            (code, 1, 10)
        );
        assert_eq!(
            options(&packet),
            [(ipcp_option::IP_ADDRESS, address.to_vec())]
        );
    }
}

// -Y frame.number==38: LCP Termination Request (5), Identifier 2, Length 16, Data "User request"
#[test]
fn real_lcp_terminate_request() {
    let bytes = ppp(38);
    let frame = Frame::new_checked(&bytes[..]).unwrap();
    let packet = Packet::new_checked(frame.payload()).unwrap();
    assert_eq!(
        (packet.code(), packet.identifier(), packet.len()),
        (code::TERMINATE_REQUEST, 2, 16)
    );
    assert_eq!(packet.data(), b"User request");
}

// -Y frame.number==32: PPP Address 0xff, Control 0x03, Protocol IPv4 (0x0021), then
//   IPv4 10.97.0.10 -> 10.97.0.1 (ICMP echo request)
#[test]
fn real_ipv4_frame_and_compressed_forms() {
    let bytes = ppp(32);
    let full = Frame::new_checked(&bytes[..]).unwrap();
    assert_eq!(full.protocol(), Protocol::IPV4);
    assert_eq!(full.payload()[0], 0x45);
    let ip = full.payload().to_vec();
    // The same frame as a peer with ACFC and/or PFC negotiated sends it.
    let acfc = &bytes[2..]; // 00 21 45 ...
    let pfc: Vec<u8> = [&[0xff, 0x03, 0x21][..], &ip[..]].concat();
    let both = &bytes[3..]; // 21 45 ...
    for (wire, address_control, compressed, offset) in [
        (&bytes[..], true, false, 4),
        (acfc, false, false, 2),
        (&pfc[..], true, true, 3),
        (both, false, true, 1),
    ] {
        let frame = Frame::new_checked(wire).unwrap();
        assert_eq!(frame.protocol(), Protocol::IPV4);
        assert_eq!(frame.has_address_control(), address_control);
        assert_eq!(frame.is_protocol_compressed(), compressed);
        assert_eq!(frame.payload_offset(), offset);
        assert_eq!(frame.payload(), &ip[..]);
        let repr = FrameRepr::parse(&frame);
        let mut out = vec![0u8; repr.header_len()];
        assert_eq!(repr.emit(&mut out), Ok(offset));
        assert_eq!(&out[..], &wire[..offset]);
    }
}

#[test]
fn frame_errors() {
    assert_eq!(Frame::new_checked(&[][..]).unwrap_err(), Error::Truncated);
    assert_eq!(
        Frame::new_checked(&[0xff, 0x03][..]).unwrap_err(),
        Error::Truncated
    );
    assert_eq!(
        Frame::new_checked(&[0xff, 0x03, 0xc0][..]).unwrap_err(),
        Error::Truncated
    );
    assert_eq!(
        Frame::new_checked(&[0xc0, 0x20, 1][..]).unwrap_err(),
        Error::Malformed
    );
    // 0xff alone (no 0x03 after it) is an odd octet: a one-octet protocol number.
    assert_eq!(
        Frame::new_checked(&[0xff][..]).unwrap().protocol(),
        Protocol(0xff)
    );
    let lcp_compressed = FrameRepr {
        compress_protocol: true,
        ..FrameRepr::new(Protocol::LCP)
    };
    assert_eq!(lcp_compressed.emit(&mut [0u8; 4]), Err(Error::Malformed));
    assert_eq!(
        FrameRepr::new(Protocol(0xc020)).emit(&mut [0u8; 4]),
        Err(Error::Malformed)
    );
    assert_eq!(
        FrameRepr::new(Protocol::LCP).emit(&mut [0u8; 3]),
        Err(Error::Truncated)
    );
}

#[test]
fn real_packets_round_trip() {
    for number in [19, 20, 23, 24, 26, 28, 38] {
        let bytes = ppp(number);
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        let mut out = vec![0u8; bytes.len()];
        let offset = FrameRepr::parse(&frame).emit(&mut out).unwrap();
        let packet = Packet::new_checked(frame.payload()).unwrap();
        let repr = Repr::parse(&packet).unwrap();
        assert_eq!(repr.buffer_len(), frame.payload().len());
        let mut view = Packet::new_unchecked(&mut out[offset..]);
        repr.emit(&mut view).unwrap();
        view.data_mut().copy_from_slice(packet.data());
        assert_eq!(out, bytes, "frame {number}");
    }
}

#[test]
fn option_writer_rebuilds_real_lcp_options() {
    let bytes = ppp(20);
    let frame = Frame::new_checked(&bytes[..]).unwrap();
    let packet = Packet::new_checked(frame.payload()).unwrap();
    let mut out = [0u8; 32];
    let mut writer = OptionWriter::new(&mut out);
    assert!(writer.is_empty());
    for (option_type, value) in [
        (lcp_option::MRU, &1400u16.to_be_bytes()[..]),
        (lcp_option::ACCM, &[0, 0, 0, 0][..]),
        (lcp_option::AUTH_PROTOCOL, &[0xc2, 0x23, 0x81][..]),
        (lcp_option::MAGIC_NUMBER, &[0xa7, 0x2d, 0x38, 0x77][..]),
    ] {
        writer.push(&ConfigOption { option_type, value }).unwrap();
    }
    let len = writer.finish();
    assert_eq!(&out[..len], packet.data());

    let mut small = [0u8; 3];
    let mut writer = OptionWriter::new(&mut small);
    let mru = ConfigOption {
        option_type: lcp_option::MRU,
        value: &[5, 120],
    };
    assert_eq!(writer.push(&mru), Err(Error::Truncated));
    assert_eq!(writer.len(), 0);
    let huge = [0u8; 254];
    let too_long = ConfigOption {
        option_type: 1,
        value: &huge,
    };
    assert_eq!(too_long.emit(&mut [0u8; 300]), Err(Error::BadLength));
}

#[test]
fn packet_lengths() {
    let bytes = ppp(19);
    let payload = &bytes[4..];
    for len in 0..payload.len() {
        assert_eq!(
            Packet::new_checked(&payload[..len]).unwrap_err(),
            Error::Truncated
        );
    }
    let mut short = payload.to_vec();
    short[2..4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(
        Packet::new_checked(&short[..]).unwrap_err(),
        Error::BadLength
    );
    let mut padded = payload.to_vec();
    padded.extend_from_slice(&[0; 8]); // padding past Length is ignored
    assert_eq!(Packet::new_checked(&padded[..]).unwrap().data().len(), 16);
}

#[test]
fn bad_option_lengths_end_iteration() {
    // MRU option with Length 0 and 1 (would loop forever if taken), and past the end.
    for (data, err) in [
        (&[1, 0, 5, 120][..], Error::BadLength),
        (&[1, 1, 5, 120][..], Error::BadLength),
        (&[1, 5, 5, 120][..], Error::Truncated),
        (&[1][..], Error::Truncated),
    ] {
        assert_eq!(OptionIter::new(data).collect::<Vec<_>>(), [Err(err)]);
    }
    let items: Vec<_> = OptionIter::new(&[8, 2, 7, 1, 4]).collect();
    let acfc = ConfigOption {
        option_type: lcp_option::ACFC,
        value: &[],
    };
    assert_eq!(items, [Ok(acfc), Err(Error::BadLength)]);
}

#[test]
fn chap_and_pap_data_errors() {
    let packet = |data: &[u8]| {
        let mut bytes = vec![1, 1, 0, 0];
        bytes.extend_from_slice(data);
        let len = bytes.len() as u16;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
        bytes
    };
    let empty = packet(&[]);
    let p = Packet::new_checked(&empty[..]).unwrap();
    assert_eq!(p.chap_value_and_name(), Err(Error::Truncated));
    assert_eq!(p.pap_peer_id_and_password(), Err(Error::Truncated));
    let long = packet(&[5, 1, 2]);
    let p = Packet::new_checked(&long[..]).unwrap();
    assert_eq!(p.chap_value_and_name(), Err(Error::BadLength));
    let pap = packet(&[5, b'a', b'l', b'i', b'c', b'e', 3, b'p', b'w', b'd']);
    let p = Packet::new_checked(&pap[..]).unwrap();
    assert_eq!(
        p.pap_peer_id_and_password(),
        Ok((&b"alice"[..], &b"pwd"[..]))
    );
    let pap_short = packet(&[5, b'a', b'l', b'i', b'c', b'e', 4, b'p', b'w', b'd']);
    let p = Packet::new_checked(&pap_short[..]).unwrap();
    assert_eq!(p.pap_peer_id_and_password(), Err(Error::BadLength));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(frame) = Frame::new_checked(&data[..]) {
            let _ = (frame.protocol(), frame.has_address_control(), frame.is_protocol_compressed());
            prop_assert!(frame.payload_offset() <= data.len());
            let _ = frame.payload();
            let mut out = [0u8; 4];
            let _ = FrameRepr::parse(&frame).emit(&mut out);
        }
        if let Ok(packet) = Packet::new_checked(&data[..]) {
            let _ = (packet.code(), packet.identifier(), packet.len(), packet.data());
            let _ = (packet.chap_value_and_name(), packet.pap_peer_id_and_password());
            prop_assert!(packet.options().count() <= data.len() / 2 + 1);
            let _ = Repr::parse(&packet);
        }
        for option in OptionIter::new(&data).flatten() {
            let _ = (option.value_u16(), option.value_u32(), option.buffer_len());
        }
    }

    #[test]
    fn emitted_frames_parse(protocol in any::<u16>(), ac in any::<bool>(), pfc in any::<bool>()) {
        let repr = FrameRepr { address_control: ac, compress_protocol: pfc, protocol: Protocol(protocol) };
        let mut out = [0u8; 4];
        if let Ok(len) = repr.emit(&mut out) {
            let frame = Frame::new_checked(&out[..len]).unwrap();
            prop_assert_eq!(FrameRepr::parse(&frame), repr);
        }
    }
}
