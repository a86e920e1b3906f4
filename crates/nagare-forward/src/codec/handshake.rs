//! The secure-forward handshake: HELO (server), PING (client), PONG (server).
//!
//! Digests are lowercase hex SHA-512 over plain byte concatenations:
//! PING `salt ‖ client_hostname ‖ nonce ‖ shared_key`, PONG `salt ‖ server_hostname ‖ nonce ‖
//! shared_key` (the client's salt, the server's hostname), password `auth ‖ username ‖
//! password`. Every field is accepted as str or bin (Fluent Bit sends raw bytes as str); we
//! send str, except HELO's nonce and auth, which go out as bin like fluentd's.

use bytes::BytesMut;
use nagare_core::msgpack::{write_array_len, write_bin, write_bool, write_map_len, write_str};
use sha2::{Digest, Sha512};
use std::net::IpAddr;

/// Handshake problems (all close the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("authentication failed: {0}")]
    Refused(String),
}

fn sha512_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// `sha512_hex(salt ‖ hostname ‖ nonce ‖ shared_key)`.
pub fn shared_key_digest(salt: &[u8], hostname: &[u8], nonce: &[u8], key: &[u8]) -> String {
    sha512_hex(&[salt, hostname, nonce, key])
}

/// `sha512_hex(auth_salt ‖ username ‖ password)`.
pub fn password_digest(auth: &[u8], username: &[u8], password: &[u8]) -> String {
    sha512_hex(&[auth, username, password])
}

fn as_bytes(v: &rmpv::Value) -> Option<&[u8]> {
    match v {
        rmpv::Value::String(s) => Some(s.as_bytes()),
        rmpv::Value::Binary(b) => Some(b),
        _ => None,
    }
}

fn decode(
    frame: &[u8],
    name: &'static str,
    len: usize,
) -> Result<Vec<rmpv::Value>, HandshakeError> {
    let mut rd = frame;
    let v = rmpv::decode::read_value(&mut rd).map_err(|_| HandshakeError::Malformed(name))?;
    match v {
        rmpv::Value::Array(a)
            if a.len() == len && a.first().and_then(as_bytes) == Some(name.as_bytes()) =>
        {
            Ok(a)
        }
        _ => Err(HandshakeError::Malformed(name)),
    }
}

/// The server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helo {
    pub nonce: Vec<u8>,
    pub auth: Vec<u8>,
    pub keepalive: bool,
}

impl Helo {
    pub fn encode(&self, out: &mut BytesMut) {
        write_array_len(out, 2);
        write_str(out, b"HELO");
        write_map_len(out, 3);
        write_str(out, b"nonce");
        write_bin(out, &self.nonce);
        write_str(out, b"auth");
        write_bin(out, &self.auth);
        write_str(out, b"keepalive");
        write_bool(out, self.keepalive);
    }

    pub fn decode(frame: &[u8]) -> Result<Helo, HandshakeError> {
        let a = decode(frame, "HELO", 2)?;
        let rmpv::Value::Map(m) = &a[1] else {
            return Err(HandshakeError::Malformed("HELO"));
        };
        let get = |k: &str| {
            m.iter()
                .find(|(kk, _)| as_bytes(kk) == Some(k.as_bytes()))
                .map(|(_, v)| v)
        };
        Ok(Helo {
            nonce: get("nonce")
                .and_then(as_bytes)
                .ok_or(HandshakeError::Malformed("HELO"))?
                .to_vec(),
            auth: get("auth").and_then(as_bytes).unwrap_or_default().to_vec(),
            keepalive: get("keepalive").and_then(|v| v.as_bool()).unwrap_or(true),
        })
    }
}

/// The client's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    pub hostname: Vec<u8>,
    pub shared_key_salt: Vec<u8>,
    pub shared_key_hexdigest: Vec<u8>,
    pub username: Vec<u8>,
    pub password_digest: Vec<u8>,
}

impl Ping {
    pub fn encode(&self, out: &mut BytesMut) {
        write_array_len(out, 6);
        write_str(out, b"PING");
        write_str(out, &self.hostname);
        write_str(out, &self.shared_key_salt);
        write_str(out, &self.shared_key_hexdigest);
        write_str(out, &self.username);
        write_str(out, &self.password_digest);
    }

    pub fn decode(frame: &[u8]) -> Result<Ping, HandshakeError> {
        let a = decode(frame, "PING", 6)?;
        let f = |i: usize| {
            as_bytes(&a[i])
                .map(<[u8]>::to_vec)
                .ok_or(HandshakeError::Malformed("PING"))
        };
        Ok(Ping {
            hostname: f(1)?,
            shared_key_salt: f(2)?,
            shared_key_hexdigest: f(3)?,
            username: f(4)?,
            password_digest: f(5)?,
        })
    }
}

/// The server's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    pub auth_result: bool,
    pub reason: String,
    pub server_hostname: Vec<u8>,
    pub shared_key_hexdigest: Vec<u8>,
}

impl Pong {
    pub fn encode(&self, out: &mut BytesMut) {
        write_array_len(out, 5);
        write_str(out, b"PONG");
        write_bool(out, self.auth_result);
        write_str(out, self.reason.as_bytes());
        write_str(out, &self.server_hostname);
        write_str(out, &self.shared_key_hexdigest);
    }

    pub fn decode(frame: &[u8]) -> Result<Pong, HandshakeError> {
        let a = decode(frame, "PONG", 5)?;
        Ok(Pong {
            auth_result: a[1].as_bool().ok_or(HandshakeError::Malformed("PONG"))?,
            reason: String::from_utf8_lossy(as_bytes(&a[2]).unwrap_or_default()).into_owned(),
            server_hostname: as_bytes(&a[3])
                .ok_or(HandshakeError::Malformed("PONG"))?
                .to_vec(),
            shared_key_hexdigest: as_bytes(&a[4])
                .ok_or(HandshakeError::Malformed("PONG"))?
                .to_vec(),
        })
    }

    /// `["PONG", false, reason, "", ""]`.
    pub fn refusal(reason: impl Into<String>) -> Pong {
        Pong {
            auth_result: false,
            reason: reason.into(),
            server_hostname: Vec::new(),
            shared_key_hexdigest: Vec::new(),
        }
    }
}

/// An IP network (`<client network 10.0.0.0/8>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// Parses `a.b.c.d/len`, an IPv6 CIDR, or a single address.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse().ok().filter(|&n| n <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// A `<client>` rule: which peers it covers, and the key and users it imposes.
#[derive(Debug, Clone, Default)]
pub struct ClientRule {
    pub networks: Vec<IpNet>,
    pub shared_key: Option<Vec<u8>>,
    pub users: Vec<String>,
}

/// Server-side `<security>` settings, resolved.
#[derive(Debug, Clone, Default)]
pub struct ServerSecurity {
    pub self_hostname: String,
    pub shared_key: Vec<u8>,
    pub user_auth: bool,
    pub users: Vec<(String, String)>,
    pub allow_anonymous_source: bool,
    pub clients: Vec<ClientRule>,
}

impl ServerSecurity {
    /// Checks a PING as fluentd's `check_ping` does and returns the PONG to send. `Err` holds
    /// the refusal reason (the PONG for it is [`Pong::refusal`]).
    pub fn check_ping(
        &self,
        ping: &Ping,
        peer: IpAddr,
        nonce: &[u8],
        auth: &[u8],
    ) -> Result<Pong, String> {
        let rule = self
            .clients
            .iter()
            .find(|c| c.networks.iter().any(|n| n.contains(peer)));
        if rule.is_none() && !self.clients.is_empty() && !self.allow_anonymous_source {
            return Err(format!("anonymous source host '{peer}' denied"));
        }
        let key: &[u8] = rule
            .and_then(|r| r.shared_key.as_deref())
            .unwrap_or(&self.shared_key);
        let want = shared_key_digest(&ping.shared_key_salt, &ping.hostname, nonce, key);
        if want.as_bytes() != ping.shared_key_hexdigest.as_slice() {
            return Err("shared_key mismatch".into());
        }
        if self.user_auth {
            let allowed =
                |u: &str| rule.is_none_or(|r| r.users.is_empty() || r.users.iter().any(|x| x == u));
            let ok = self.users.iter().any(|(u, p)| {
                u.as_bytes() == ping.username.as_slice()
                    && allowed(u)
                    && password_digest(auth, u.as_bytes(), p.as_bytes()).as_bytes()
                        == ping.password_digest.as_slice()
            });
            if !ok {
                return Err("username/password mismatch".into());
            }
        }
        Ok(Pong {
            auth_result: true,
            reason: String::new(),
            server_hostname: self.self_hostname.as_bytes().to_vec(),
            shared_key_hexdigest: shared_key_digest(
                &ping.shared_key_salt,
                self.self_hostname.as_bytes(),
                nonce,
                key,
            )
            .into_bytes(),
        })
    }
}

/// Client-side credentials (`out_forward` `<security>` / `<server>`).
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    pub self_hostname: String,
    pub shared_key: Vec<u8>,
    pub username: String,
    pub password: String,
}

impl ClientSecurity {
    /// The PING answering `helo`, using `salt` (32 hex chars, as fluentd).
    pub fn ping(&self, helo: &Helo, salt: &[u8]) -> Ping {
        let (username, password_digest) = if helo.auth.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (
                self.username.as_bytes().to_vec(),
                password_digest(
                    &helo.auth,
                    self.username.as_bytes(),
                    self.password.as_bytes(),
                )
                .into_bytes(),
            )
        };
        Ping {
            hostname: self.self_hostname.as_bytes().to_vec(),
            shared_key_salt: salt.to_vec(),
            shared_key_hexdigest: shared_key_digest(
                salt,
                self.self_hostname.as_bytes(),
                &helo.nonce,
                &self.shared_key,
            )
            .into_bytes(),
            username,
            password_digest,
        }
    }

    /// Accepts or rejects the server's PONG, as fluentd's client does.
    pub fn verify_pong(&self, pong: &Pong, helo: &Helo, salt: &[u8]) -> Result<(), HandshakeError> {
        if !pong.auth_result {
            return Err(HandshakeError::Refused(pong.reason.clone()));
        }
        if pong.server_hostname == self.self_hostname.as_bytes() {
            return Err(HandshakeError::Refused(
                "same hostname between input and output".into(),
            ));
        }
        let want = shared_key_digest(salt, &pong.server_hostname, &helo.nonce, &self.shared_key);
        if want.as_bytes() != pong.shared_key_hexdigest.as_slice() {
            return Err(HandshakeError::Refused("shared key digest mismatch".into()));
        }
        Ok(())
    }
}

/// A fresh 32-char hex salt.
pub fn new_salt() -> Vec<u8> {
    let b: [u8; 16] = rand::random();
    hex::encode(b).into_bytes()
}

/// 16 fresh random bytes (nonce, auth).
pub fn random16() -> Vec<u8> {
    let b: [u8; 16] = rand::random();
    b.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; 16] = [
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ];
    const AUTH: [u8; 16] = [
        0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        0x00,
    ];
    const SALT: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn helo() -> Helo {
        Helo {
            nonce: NONCE.to_vec(),
            auth: AUTH.to_vec(),
            keepalive: true,
        }
    }

    #[test]
    fn v13a_helo_bytes() {
        let mut out = BytesMut::new();
        helo().encode(&mut out);
        assert_eq!(hex::encode(&out), "92a448454c4f83a56e6f6e6365c41000112233445566778899aabbccddeeffa461757468c410ffeeddccbbaa99887766554433221100a96b656570616c697665c3");
        assert_eq!(Helo::decode(&out).unwrap(), helo());
    }

    #[test]
    fn v13b_ping_digests() {
        let c = ClientSecurity {
            self_hostname: "forwarder-1.example".into(),
            shared_key: b"s3cr3t".to_vec(),
            username: "alice".into(),
            password: "pa55".into(),
        };
        let p = c.ping(&helo(), SALT);
        assert_eq!(p.shared_key_hexdigest, b"63b72a0fa73d8441a6ef577f84172d29b41e71cee5c26d7542d54bad2886960c55a4c07dcfcbeb627c291d91bd022d0de95edf2abd28a26a094e5965c3b27aab");
        assert_eq!(p.password_digest, b"62eafb13132dc8ba9e7a21e8db9d23496aee4ff76591201f34611c3c9dcc37bb1cb9974fd2f30301e02299c058077d90eb558fc295082c540bb9be941aa0585a");
        let mut out = BytesMut::new();
        p.encode(&mut out);
        assert_eq!(out.len(), 326);
        assert_eq!(Ping::decode(&out).unwrap(), p);
    }

    #[test]
    fn v13c_pong_and_v13d_refusal() {
        let s = ServerSecurity {
            self_hostname: "aggregator-1.example".into(),
            shared_key: b"s3cr3t".to_vec(),
            user_auth: true,
            users: vec![("alice".into(), "pa55".into())],
            allow_anonymous_source: true,
            clients: vec![],
        };
        let c = ClientSecurity {
            self_hostname: "forwarder-1.example".into(),
            shared_key: b"s3cr3t".to_vec(),
            username: "alice".into(),
            password: "pa55".into(),
        };
        let ping = c.ping(&helo(), SALT);
        let pong = s
            .check_ping(&ping, "127.0.0.1".parse().unwrap(), &NONCE, &AUTH)
            .unwrap();
        assert_eq!(pong.shared_key_hexdigest, b"fea89b1373bbc7f99f002a4022daac2b2348ceb965c131dfb7c0ff3dddcbce2214fb421155dc960cee19456b51e93f0ba66da0d290bba5dd8c4762a5b7035ec9");
        let mut out = BytesMut::new();
        pong.encode(&mut out);
        assert_eq!(out.len(), 159);
        assert!(c
            .verify_pong(&Pong::decode(&out).unwrap(), &helo(), SALT)
            .is_ok());

        let mut refusal = BytesMut::new();
        Pong::refusal("shared_key mismatch").encode(&mut refusal);
        assert_eq!(
            hex::encode(&refusal),
            "95a4504f4e47c2b37368617265645f6b6579206d69736d61746368a0a0"
        );

        let bad = ClientSecurity {
            shared_key: b"nope".to_vec(),
            ..c.clone()
        };
        let e = s.check_ping(
            &bad.ping(&helo(), SALT),
            "127.0.0.1".parse().unwrap(),
            &NONCE,
            &AUTH,
        );
        assert_eq!(e, Err("shared_key mismatch".into()));
        let badpw = ClientSecurity {
            password: "x".into(),
            ..c.clone()
        };
        let e = s.check_ping(
            &badpw.ping(&helo(), SALT),
            "127.0.0.1".parse().unwrap(),
            &NONCE,
            &AUTH,
        );
        assert_eq!(e, Err("username/password mismatch".into()));
        // A PONG with our own hostname or a wrong digest is refused by the client.
        let mut same = pong.clone();
        same.server_hostname = b"forwarder-1.example".to_vec();
        assert!(c.verify_pong(&same, &helo(), SALT).is_err());
        let mut wrong = pong;
        wrong.shared_key_hexdigest = b"00".to_vec();
        assert!(c.verify_pong(&wrong, &helo(), SALT).is_err());
    }

    #[test]
    fn client_rules_and_anonymous_sources() {
        let s = ServerSecurity {
            self_hostname: "agg".into(),
            shared_key: b"k".to_vec(),
            allow_anonymous_source: false,
            clients: vec![ClientRule {
                networks: vec![IpNet::parse("10.0.0.0/8").unwrap()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = ClientSecurity {
            self_hostname: "fw".into(),
            shared_key: b"k".to_vec(),
            ..Default::default()
        };
        let h = Helo {
            nonce: NONCE.to_vec(),
            auth: vec![],
            keepalive: true,
        };
        let p = c.ping(&h, SALT);
        assert!(s
            .check_ping(&p, "10.1.2.3".parse().unwrap(), &NONCE, &[])
            .is_ok());
        assert_eq!(
            s.check_ping(&p, "127.0.0.1".parse().unwrap(), &NONCE, &[]),
            Err("anonymous source host '127.0.0.1' denied".into())
        );
    }
}
