//! Service tokens: `Authorization: Bearer <secret>` with scopes.

use std::fmt;

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a service token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read subscriber status and list members (`/internal/v1/…`).
    Status,
    /// Data-protection administration (`/admin/v1/…`).
    Admin,
}

impl Scope {
    fn parse(input: &str) -> Option<Self> {
        match input {
            "status" => Some(Self::Status),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Why `NEWSLETTER_TOKENS` could not be read. Never includes a secret.
#[derive(Debug, thiserror::Error)]
pub enum TokenConfigError {
    /// An entry is not `name:secret:scope+scope`.
    #[error("entry {index} is not name:secret:scope+scope")]
    Shape {
        /// 1-based position of the entry.
        index: usize,
    },
    /// A name is empty, too long, or has characters other than [A-Za-z0-9._-].
    #[error("entry {index} has an invalid name (1-64 characters of [A-Za-z0-9._-])")]
    Name {
        /// 1-based position of the entry.
        index: usize,
    },
    /// A secret shorter than 16 characters.
    #[error("the token named {name:?} has a secret shorter than 16 characters")]
    WeakSecret {
        /// The token's name.
        name: String,
    },
    /// A scope other than `status` or `admin`.
    #[error("the token named {name:?} has an unknown scope {scope:?} (use status, admin)")]
    Scope {
        /// The token's name.
        name: String,
        /// The unknown scope.
        scope: String,
    },
    /// Two tokens with one name.
    #[error("two tokens are named {name:?}")]
    Duplicate {
        /// The repeated name.
        name: String,
    },
}

struct ServiceToken {
    name: String,
    secret_digest: [u8; 32],
    scopes: Vec<Scope>,
}

/// The configured service tokens. Secrets are kept only as SHA-256 digests and compared in
/// constant time.
#[derive(Default)]
pub struct ServiceTokens {
    tokens: Vec<ServiceToken>,
}

impl fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|t| &t.name))
            .finish()
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ServiceTokens {
    /// Parses `name:secret:scope+scope,…` (the `NEWSLETTER_TOKENS` format).
    pub fn parse(spec: &str) -> Result<Self, TokenConfigError> {
        let mut tokens: Vec<ServiceToken> = Vec::new();
        for (i, entry) in spec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let index = i + 1;
            // The name ends at the first ':' and the scopes start after the last, so a secret
            // may contain ':' (but not ',', which separates tokens).
            let Some((name, rest)) = entry.split_once(':') else {
                return Err(TokenConfigError::Shape { index });
            };
            let Some((secret, scopes)) = rest.rsplit_once(':') else {
                return Err(TokenConfigError::Shape { index });
            };
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid_name {
                return Err(TokenConfigError::Name { index });
            }
            if secret.chars().count() < 16 {
                return Err(TokenConfigError::WeakSecret {
                    name: name.to_owned(),
                });
            }
            let scopes = scopes
                .split('+')
                .map(|s| {
                    Scope::parse(s.trim()).ok_or_else(|| TokenConfigError::Scope {
                        name: name.to_owned(),
                        scope: if s.len() <= 16 {
                            s.to_owned()
                        } else {
                            "(long)".to_owned()
                        },
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if tokens.iter().any(|t| t.name == name) {
                return Err(TokenConfigError::Duplicate {
                    name: name.to_owned(),
                });
            }
            tokens.push(ServiceToken {
                name: name.to_owned(),
                secret_digest: digest(secret.as_bytes()),
                scopes,
            });
        }
        Ok(Self { tokens })
    }

    /// True when no token is configured (the internal API then answers 401 to everyone).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the caller's token if it carries `scope`: 401 without a known token,
    /// 403 with one that lacks the scope.
    pub fn authorize(&self, request: &HttpRequest, scope: Scope) -> Result<&str, ApiError> {
        match self.check(request, scope) {
            Access::Granted(name) => Ok(name),
            Access::Forbidden(_) => Err(ApiError::Forbidden),
            Access::Unauthorized => Err(ApiError::Unauthorized),
        }
    }

    /// Who the caller is and whether its token carries `scope` (never the secret).
    pub fn check(&self, request: &HttpRequest, scope: Scope) -> Access<'_> {
        let Some(presented) = request
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (kind, secret) = value.trim().split_once(' ')?;
                kind.eq_ignore_ascii_case("bearer").then(|| secret.trim())
            })
        else {
            return Access::Unauthorized;
        };
        let presented = digest(presented.as_bytes());
        // Compare against every token so the time taken does not depend on which one matched.
        let mut found = None;
        for token in &self.tokens {
            if same(&token.secret_digest, &presented) {
                found = Some(token);
            }
        }
        match found {
            None => Access::Unauthorized,
            Some(token) if token.scopes.contains(&scope) => Access::Granted(&token.name),
            Some(token) => Access::Forbidden(&token.name),
        }
    }
}

/// The result of checking a caller's token against a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// A known token with the scope; its name.
    Granted(&'a str),
    /// A known token without the scope; its name.
    Forbidden(&'a str),
    /// No token, or one that is not configured.
    Unauthorized,
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    const SPEC: &str = "crm:0123456789abcdef0123:status, dpo:fedcba9876543210fedc:admin+status";

    #[test]
    fn parses_names_secrets_and_scopes() {
        let tokens = ServiceTokens::parse(SPEC).unwrap();
        assert_eq!(format!("{tokens:?}"), r#"["crm", "dpo"]"#);
    }

    #[test]
    fn rejects_bad_entries_without_echoing_secrets() {
        for (spec, expected) in [
            ("crm:short:status", "shorter than 16"),
            ("crm:0123456789abcdef0123", "name:secret:scope"),
            ("crm:0123456789:abcdef0123:root", "unknown scope"),
            ("crm:0123456789abcdef0123:root", "unknown scope"),
            ("c rm:0123456789abcdef0123:status", "invalid name"),
            (
                "a:0123456789abcdef0123:status,a:0123456789abcdef0124:status",
                "two tokens",
            ),
        ] {
            let error = ServiceTokens::parse(spec).unwrap_err().to_string();
            assert!(error.contains(expected), "{spec}: {error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
        }
    }

    #[test]
    fn a_secret_may_contain_colons() {
        let tokens = ServiceTokens::parse("crm:0123:4567:89ab:cdef:status").unwrap();
        let request = TestRequest::default()
            .insert_header(("Authorization", "Bearer 0123:4567:89ab:cdef"))
            .to_http_request();
        assert_eq!(tokens.authorize(&request, Scope::Status).unwrap(), "crm");
    }

    #[test]
    fn authorizes_by_secret_and_scope() {
        let tokens = ServiceTokens::parse(SPEC).unwrap();
        let with = |value: &str| {
            TestRequest::default()
                .insert_header(("Authorization", value))
                .to_http_request()
        };
        assert_eq!(
            tokens
                .authorize(&with("Bearer 0123456789abcdef0123"), Scope::Status)
                .unwrap(),
            "crm"
        );
        assert!(matches!(
            tokens.authorize(&with("Bearer 0123456789abcdef0123"), Scope::Admin),
            Err(ApiError::Forbidden)
        ));
        assert!(matches!(
            tokens.authorize(&with("Bearer wrong-secret-of-length"), Scope::Status),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            tokens.authorize(&TestRequest::default().to_http_request(), Scope::Status),
            Err(ApiError::Unauthorized)
        ));
        assert_eq!(
            tokens
                .authorize(&with("bearer fedcba9876543210fedc"), Scope::Admin)
                .unwrap(),
            "dpo"
        );
        assert_eq!(
            tokens.check(&with("Bearer 0123456789abcdef0123"), Scope::Admin),
            Access::Forbidden("crm")
        );
        assert_eq!(
            tokens.check(&with("Bearer wrong-secret-of-length"), Scope::Admin),
            Access::Unauthorized
        );
    }
}
