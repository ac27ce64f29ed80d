//! Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature):
//! arbitrary bytes into the channel stream decoders. Not an API. The same
//! functions replay the committed corpus in this crate's tests.

use bytes::Bytes;

use crate::framing::{FrameDecoder, StreamHeader};

/// A channel stream as a peer sends it: the header, then frames, received
/// in chunks whose sizes the input's first byte varies. Frames come out
/// within the limit or the stream is refused.
pub fn channel_stream(bytes: &[u8]) {
    let Some((&shape, rest)) = bytes.split_first() else {
        return;
    };
    let Ok(Some((_, used))) = StreamHeader::decode(rest) else {
        return;
    };
    let max = usize::from(shape) * 8;
    let chunk = usize::from(shape % 17) + 1;
    let mut decoder = FrameDecoder::default();
    for piece in rest[used..].chunks(chunk) {
        decoder.push(Bytes::copy_from_slice(piece));
        loop {
            match decoder.next_frame(max) {
                Ok(Some(frame)) => assert!(frame.len() <= max),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_corpus_replays_without_a_panic() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/channel_stream");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            super::channel_stream(&std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")));
            count += 1;
        }
        assert!(count > 0);
    }
}
