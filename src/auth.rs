//! JWT verification (every shard) and minting (`im-gateway token`, tests, load tests).
//!
//! One algorithm is accepted per deployment: HS256 with `auth.jwt_secret`, or RS256 /
//! ES256 with the PEM in `auth.jwt_public_key` (the family is read off the key). A token
//! whose header names any other algorithm is refused, which rules out `alg: none` and
//! algorithm confusion (an HS256 token "signed" with the public key). `exp` is
//! required; `iss` and `aud` are checked when configured; `sub` must be a decimal user
//! id.
//!
//! Rotation (HS256): with `auth.jwt_secret_previous` set, a token whose signature does
//! not match `jwt_secret` is tried once more against the previous secret, so tokens
//! issued before the switch stay valid until they expire. Only a bad signature falls
//! through; an expired or malformed token is refused by the first check.

use crate::config::AuthConfig;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Claims we read and write.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id as a decimal string.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Optional client platform (1 = iOS, 2 = Android, 3 = web, ... as the app decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<i32>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// `sub` as a number.
    pub user_id: i64,
    /// The `platform` claim, if any.
    pub platform: Option<i32>,
}

/// Why a token was refused. The text goes into the 401 body or the 4001 close reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token anywhere.
    #[error("missing token")]
    Missing,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `sub` is not a positive decimal user id.
    #[error("token subject is not a user id")]
    BadSubject,
    /// Bad signature, wrong algorithm, malformed, wrong `iss`/`aud`, missing `exp`.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Key material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("config key {key}: {message}")]
pub struct KeyError {
    /// The config key at fault.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// Checks tokens; built once, shared by every shard (`Arc`).
pub struct Verifier {
    key: DecodingKey,
    /// `auth.jwt_secret_previous`: the secret being rotated out, tried after `key`.
    previous: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// Reads the PEM file that config key `key` names as an RSA key, else as an EC one
/// (`what`: public or private), and says which algorithm it implies. The one loader of
/// the verifier's and the minter's keys.
fn pem_key<K, E>(
    key: &'static str,
    path: &std::path::Path,
    what: &str,
    rsa: impl Fn(&[u8]) -> Result<K, E>,
    ec: impl Fn(&[u8]) -> Result<K, E>,
) -> Result<(K, Algorithm), KeyError> {
    let pem = std::fs::read(path).map_err(|e| KeyError { key, message: format!("{}: {e}", path.display()) })?;
    if let Ok(k) = rsa(&pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = ec(&pem) {
        return Ok((k, Algorithm::ES256));
    }
    Err(KeyError { key, message: format!("{} is neither an RSA nor an EC {what} key in PEM", path.display()) })
}

impl Verifier {
    /// Builds the verifier from `[auth]`.
    pub fn from_config(auth: &AuthConfig) -> Result<Self, KeyError> {
        let (key, alg) = match &auth.jwt_public_key {
            None => (DecodingKey::from_secret(auth.jwt_secret.as_bytes()), Algorithm::HS256),
            Some(path) => {
                pem_key("auth.jwt_public_key", path, "public", DecodingKey::from_rsa_pem, DecodingKey::from_ec_pem)?
            }
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = auth.leeway_s;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &auth.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &auth.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let previous = match (&auth.jwt_public_key, &auth.jwt_secret_previous) {
            (None, Some(secret)) => Some(DecodingKey::from_secret(secret.as_bytes())),
            // `Config::validate` refuses a previous secret next to a public key.
            _ => None,
        };
        Ok(Self { key, previous, validation })
    }

    /// The algorithm tokens must use.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }

    /// Verifies `token` and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        // Tokens are small; a huge one is garbage and not worth base64-decoding.
        if token.len() > 8192 {
            return Err(AuthError::Invalid("token too long".into()));
        }
        let mut decoded = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation);
        if let (Err(e), Some(previous)) = (&decoded, &self.previous) {
            if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature {
                decoded = jsonwebtoken::decode::<Claims>(token, previous, &self.validation);
            }
        }
        let data = decoded.map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not accepted".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("missing claim {c}")),
                _ => AuthError::Invalid("malformed token".into()),
            }
        })?;
        let user_id: i64 = data.claims.sub.parse().map_err(|_| AuthError::BadSubject)?;
        if user_id <= 0 {
            return Err(AuthError::BadSubject);
        }
        Ok(Identity { user_id, platform: data.claims.platform })
    }
}

/// Signs tokens with the configured key.
pub struct Minter {
    key: EncodingKey,
    alg: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Minter {
    /// HS256 with `auth.jwt_secret`, or RS256/ES256 with `auth.jwt_private_key` when a
    /// public key is configured.
    pub fn from_config(auth: &AuthConfig) -> Result<Self, KeyError> {
        let (key, alg) = match (&auth.jwt_public_key, &auth.jwt_private_key) {
            (None, _) => (EncodingKey::from_secret(auth.jwt_secret.as_bytes()), Algorithm::HS256),
            (Some(_), None) => {
                return Err(KeyError {
                    key: "auth.jwt_private_key",
                    message: "needed to mint tokens when auth.jwt_public_key is set".into(),
                })
            }
            (Some(_), Some(path)) => {
                pem_key("auth.jwt_private_key", path, "private", EncodingKey::from_rsa_pem, EncodingKey::from_ec_pem)?
            }
        };
        Ok(Self { key, alg, issuer: auth.issuer.clone(), audience: auth.audience.clone() })
    }

    /// A token for `user_id`, valid for `ttl_s` seconds from now.
    pub fn mint(&self, user_id: i64, platform: Option<i32>, ttl_s: u64) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        self.sign(&Claims {
            sub: user_id.to_string(),
            exp: now + ttl_s,
            platform,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: Some(now),
        })
    }

    /// Signs arbitrary claims (tests use it for expired or odd tokens).
    pub fn sign(&self, claims: &Claims) -> String {
        // Encoding our own claims with a key that loaded cannot fail.
        jsonwebtoken::encode(&Header::new(self.alg), claims, &self.key).expect("sign JWT with a loaded key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AuthConfig {
        AuthConfig::default()
    }

    #[test]
    fn round_trip_and_rejections() {
        let v = Verifier::from_config(&auth()).unwrap();
        let m = Minter::from_config(&auth()).unwrap();
        let id = v.verify(&m.mint(1001, Some(3), 60)).unwrap();
        assert_eq!(id, Identity { user_id: 1001, platform: Some(3) });

        let mut other = auth();
        other.jwt_secret = "another-secret-of-enough-length".into();
        let foreign = Minter::from_config(&other).unwrap().mint(1, None, 60);
        assert!(matches!(v.verify(&foreign), Err(AuthError::Invalid(_))));

        let expired = {
            let claims = Claims { sub: "5".into(), exp: 1, platform: None, iss: None, aud: None, iat: None };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(auth().jwt_secret.as_bytes()),
            )
            .unwrap()
        };
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert!(v.verify("not.a.jwt").is_err());
    }

    #[test]
    fn previous_secret_is_accepted_during_rotation() {
        let old = auth();
        let mut new = auth();
        new.jwt_secret = "the-new-secret-after-rotation".into();
        let mut window = new.clone();
        window.jwt_secret_previous = Some(old.jwt_secret.clone());
        let (old_token, new_token) = (
            Minter::from_config(&old).unwrap().mint(7, None, 60),
            Minter::from_config(&new).unwrap().mint(8, None, 60),
        );
        let v = Verifier::from_config(&window).unwrap();
        assert_eq!(v.verify(&old_token).unwrap().user_id, 7);
        assert_eq!(v.verify(&new_token).unwrap().user_id, 8);
        let mut stranger = auth();
        stranger.jwt_secret = "neither-the-old-nor-the-new-one".into();
        let foreign = Minter::from_config(&stranger).unwrap().mint(9, None, 60);
        assert_eq!(v.verify(&foreign), Err(AuthError::Invalid("bad signature".into())));
        let expired_old = Minter::from_config(&old).unwrap().sign(&Claims {
            sub: "7".into(),
            exp: 1,
            platform: None,
            iss: None,
            aud: None,
            iat: None,
        });
        assert_eq!(v.verify(&expired_old), Err(AuthError::Expired), "the old secret does not revive expiry");

        let after = Verifier::from_config(&new).unwrap();
        assert!(matches!(after.verify(&old_token), Err(AuthError::Invalid(_))));
        assert_eq!(after.verify(&new_token).unwrap().user_id, 8);
    }

    #[test]
    fn alg_none_is_rejected() {
        let v = Verifier::from_config(&auth()).unwrap();
        use base64_free::b64;
        let token = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(br#"{"sub":"1","exp":99999999999}"#));
        assert!(matches!(v.verify(&token), Err(AuthError::Invalid(_))));
    }

    /// Minimal URL-safe base64 (no padding) so the test needs no extra crate.
    mod base64_free {
        pub fn b64(input: &[u8]) -> String {
            const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
