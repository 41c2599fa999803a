//! `NativeRegion`: a named range of shared bytes opened through a bus (see core::objects).

use std::sync::Arc;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::bus::Inner;
use super::errors::{bounds_error, coded, js, object_error, whole, CodedResult};
use crate::core::objects::Region;

/// A named range of shared bytes.
#[napi]
pub struct NativeRegion {
    bus: Arc<Inner>,
    region: Region,
}

impl NativeRegion {
    /// Opens (creating on first use) the named region of `size` bytes.
    pub(super) fn open(bus: &Arc<Inner>, name: String, size: f64) -> CodedResult<NativeRegion> {
        let region = bus.open().and_then(|inner| {
            let size = whole(size, "size")?;
            Region::open(&inner.ep, &name, size).map_err(object_error)
        })?;
        Ok(NativeRegion {
            bus: bus.clone(),
            region,
        })
    }
}

#[napi]
impl NativeRegion {
    #[napi(getter)]
    pub fn size(&self) -> f64 {
        self.region.size() as f64
    }

    #[napi]
    pub fn write(&self, env: &Env, offset: f64, data: &[u8]) -> Result<()> {
        let r = self
            .bus
            .open()
            .and_then(|_| self.region.write(whole(offset, "offset")?, data).map_err(bounds_error));
        js(env, r)
    }

    #[napi]
    pub fn read(&self, env: &Env, offset: f64, length: f64) -> Result<Buffer> {
        let r = self.bus.open().and_then(|_| {
            let len = whole(length, "length")?;
            let len = usize::try_from(len).map_err(|_| coded("ERR_OUT_OF_BOUNDS", "length too large"))?;
            self.region.read(whole(offset, "offset")?, len).map_err(bounds_error)
        });
        js(env, r).map(Buffer::from)
    }
}
