use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};

use super::StoreError;

/// An opaque pagination token: base64url of a store-specific JSON position. Clients pass it
/// back unchanged; anything else is refused as `BadCursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    pub fn from_client(token: &str) -> Self {
        Self(token.to_owned())
    }

    pub fn encode<T: Serialize>(position: &T) -> Result<Self, StoreError> {
        let json = serde_json::to_vec(position).map_err(StoreError::backend)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(json)))
    }

    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        let bytes = URL_SAFE_NO_PAD.decode(&self.0).map_err(|_| StoreError::BadCursor)?;
        serde_json::from_slice(&bytes).map_err(|_| StoreError::BadCursor)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
