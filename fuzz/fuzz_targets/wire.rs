//! The inter-process message decoder (`mmxa::share::wire`): frames read with `recv` from
//! arbitrary bytes and decoded field by field, with the field types also taken from the input
//! (the host and guest decode fields in an order fixed by the operation). Never a panic; a
//! field that decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mmxa::share::wire::{recv, status, In, Out, Status};

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the fields; the rest is the stream.
    let n = usize::from(*data.first().unwrap_or(&0) % 16);
    let Some(types) = data.get(1..1 + n) else {
        return;
    };
    let mut stream = &data[1 + n..];
    for _ in 0..4 {
        let frame = match recv(&mut stream) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return,
        };
        assert!(!frame.is_empty() && frame.len() <= mmxa::share::wire::MAX_FRAME);
        // A reply's status first, or a request's fields from the start.
        let mut r = In::new(&frame);
        if types.first() == Some(&0xff) {
            let _ = status(&mut r).map(|s| match s {
                Status::Ok => String::new(),
                Status::Err(e) => e.to_string(),
            });
            continue;
        }
        // Where the next field starts in `frame`.
        let mut at = 0;
        for t in types {
            // Each field as Out would write it: decoding then encoding is the identity.
            let ok = match t % 8 {
                0 => r.u8().map(|v| Out::request(0).u8(v)),
                1 => r.bool().map(|v| Out::request(0).bool(v)),
                2 => r.u32().map(|v| Out::request(0).u32(v)),
                3 => r.i32().map(|v| Out::request(0).i32(v)),
                4 => r.u64().map(|v| Out::request(0).u64(v)),
                5 => r.bytes().map(|v| Out::request(0).bytes(v)),
                6 => r.opt_bytes().map(|v| Out::request(0).opt_bytes(v)),
                _ => r.xid().map(|x| Out::request(0).xid(&x)),
            };
            let Ok(out) = ok else { break };
            let mut sent = Vec::new();
            out.send(&mut sent).expect("writing to a Vec");
            // Skip the length and the op byte `request` put first.
            let field = &sent[5..];
            assert_eq!(
                frame.get(at..at + field.len()),
                Some(field),
                "field type {}",
                t % 8
            );
            at += field.len();
        }
        let _ = r.done();
        let _ = In::new(&frame).string();
    }
});
