use super::frame::*;
use bytes::{Bytes, BytesMut};

#[test]
fn dictionary_is_the_spdy3_one() {
    let d = dictionary();
    assert_eq!(d.len(), 1423);
    let mut c = flate2::Compress::new(flate2::Compression::default(), true);
    assert_eq!(c.set_dictionary(d).expect("dictionary"), 0xe3c6_a7c2);
}
