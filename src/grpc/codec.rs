//! The codec of Tessera's own gRPC services: prost, with buffers sized for Tessera's messages.
//!
//! tonic's default codec starts every call's request and response buffer at 8 KiB. A Check and
//! its answer are a few hundred bytes, so each call paid two 8 KiB allocations, too large for the
//! allocator's per-thread cache (BENCHMARKS.md, "Check at the floor"). Buffers still grow to
//! whatever a message needs (a long `ListTokens` page), so no message is refused or cut.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Where every call's buffers start.
const BUFFER_BYTES: usize = 1024;
/// tonic's own default: how much a streaming response buffers before it yields.
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// Named in build.rs as the generated services' and clients' codec.
#[derive(Debug)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

pub(crate) fn buffer_settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}
