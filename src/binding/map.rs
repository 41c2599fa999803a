//! `NativeMap`: a named shared map opened through a bus (see core::map). Values cross the
//! boundary as `[kind, ...bytes]`; index.js encodes and decodes them.

use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;

use super::bus::Inner;
use super::errors::{coded, js, map_error, object_error, whole, CodedResult};
use crate::core::map::SharedMap;

/// A named shared map. Values cross as (kind, bytes); index.js encodes and decodes them.
#[napi]
pub struct NativeMap {
    bus: Arc<Inner>,
    map: SharedMap,
}

impl NativeMap {
    /// Opens (creating on first use) the named map.
    pub(super) fn open(
        bus: &Arc<Inner>,
        name: String,
        capacity: f64,
        max_key_bytes: f64,
        max_value_bytes: f64,
    ) -> CodedResult<NativeMap> {
        let map = bus.open().and_then(|inner| {
            let (c, k, v) = (
                whole(capacity, "capacity")?,
                whole(max_key_bytes, "maxKeyBytes")?,
                whole(max_value_bytes, "maxValueBytes")?,
            );
            SharedMap::open(&inner.ep, &name, c, k, v).map_err(object_error)
        })?;
        Ok(NativeMap { bus: bus.clone(), map })
    }
}

/// `[kind, ...bytes]`, the form values cross the boundary in.
fn kind_and_bytes(kind: u8, bytes: Vec<u8>) -> Buffer {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(kind);
    v.extend_from_slice(&bytes);
    Buffer::from(v)
}

#[napi]
impl NativeMap {
    #[napi(getter)]
    pub fn capacity(&self) -> u32 {
        self.map.capacity()
    }

    #[napi(getter)]
    pub fn size(&self, env: &Env) -> Result<u32> {
        js(env, self.map.len().map_err(map_error))
    }

    /// How long (ms) an operation waits while another process holds the map's lock before it
    /// throws ERR_LOCK_TIMEOUT; a negative value waits as long as the holder lives.
    #[napi]
    pub fn set_lock_timeout(&mut self, ms: f64) {
        let bound = (ms >= 0.0 && ms.is_finite()).then(|| Duration::from_secs_f64(ms / 1000.0));
        self.map.set_lock_bound(bound);
    }

    /// The value as `[kind, ...bytes]`, or null.
    #[napi]
    pub fn get(&self, env: &Env, key: String) -> Result<Option<Buffer>> {
        let r = self.bus.open().and_then(|_| {
            let v = self.map.get(key.as_bytes()).map_err(map_error)?;
            Ok(v.map(|(k, v)| kind_and_bytes(k, v)))
        });
        js(env, r)
    }

    #[napi]
    pub fn has(&self, env: &Env, key: String) -> Result<bool> {
        js(
            env,
            self.bus
                .open()
                .and_then(|_| self.map.has(key.as_bytes()).map_err(map_error)),
        )
    }

    #[napi]
    pub fn set(&self, env: &Env, key: String, kind: u32, value: &[u8]) -> Result<()> {
        let r = self
            .bus
            .open()
            .and_then(|_| self.map.set(key.as_bytes(), kind as u8, value).map_err(map_error));
        js(env, r)
    }

    #[napi]
    pub fn delete(&self, env: &Env, key: String) -> Result<bool> {
        js(
            env,
            self.bus
                .open()
                .and_then(|_| self.map.delete(key.as_bytes()).map_err(map_error)),
        )
    }

    #[napi]
    pub fn increment(&self, env: &Env, key: String, by: f64) -> Result<f64> {
        let r = self
            .bus
            .open()
            .and_then(|_| self.map.increment(key.as_bytes(), by).map_err(map_error));
        js(env, r)
    }

    /// `expected`/`value` as `[kind, ...bytes]`, or null for "absent" / "delete".
    #[napi]
    pub fn compare_and_set(
        &self,
        env: &Env,
        key: String,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool> {
        let split = |b: &[u8]| -> CodedResult<(u8, Vec<u8>)> {
            b.split_first()
                .map(|(k, rest)| (*k, rest.to_vec()))
                .ok_or_else(|| coded("ERR_INVALID_ARG", "empty encoded value"))
        };
        let r = self.bus.open().and_then(|_| {
            let e = expected.map(split).transpose()?;
            let v = value.map(split).transpose()?;
            self.map
                .compare_and_set(
                    key.as_bytes(),
                    e.as_ref().map(|(k, b)| (*k, b.as_slice())),
                    v.as_ref().map(|(k, b)| (*k, b.as_slice())),
                )
                .map_err(map_error)
        });
        js(env, r)
    }

    #[napi]
    pub fn keys(&self, env: &Env) -> Result<Vec<String>> {
        let r = self.bus.open().and_then(|_| {
            let keys = self.map.keys().map_err(map_error)?;
            Ok(keys
                .into_iter()
                .map(|k| String::from_utf8_lossy(&k).into_owned())
                .collect())
        });
        js(env, r)
    }
}
