//! The IPC capability token: 32 random bytes the daemon makes at start, writes hex-encoded
//! to `ipc.token` beside its config file (mode 0600, never readable by others even
//! briefly), and requires in every connection's `hello`. Any local process that can read
//! the user's files may talk to the daemon; nothing else (other users, web pages) can.
//!
//! Calls nothing of ours. The daemon calls [`CapabilityToken::create_file`]; the server
//! [`CapabilityToken::verify`]; clients [`CapabilityToken::read_file`].

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rand::RngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// The token file's name, in the directory of the config file in use.
pub const TOKEN_FILE_NAME: &str = "ipc.token";
/// Raw token length.
pub const TOKEN_LEN: usize = 32;

/// A capability token. `Debug` never prints it; it is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct CapabilityToken([u8; TOKEN_LEN]);

impl fmt::Debug for CapabilityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CapabilityToken(..)")
    }
}

impl Drop for CapabilityToken {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl CapabilityToken {
    /// A fresh token from the OS random source.
    pub fn generate() -> CapabilityToken {
        let mut b = [0u8; TOKEN_LEN];
        rand::rngs::OsRng.fill_bytes(&mut b);
        CapabilityToken(b)
    }

    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> CapabilityToken {
        CapabilityToken(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// Lower-case hex, as stored in the file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the file's content (surrounding whitespace allowed).
    pub fn from_hex(s: &str) -> Option<CapabilityToken> {
        let mut b = [0u8; TOKEN_LEN];
        hex::decode_to_slice(s.trim(), &mut b).ok()?;
        Some(CapabilityToken(b))
    }

    /// Whether `presented` (the 32 raw bytes, or tolerated: the 64 hex characters) is this
    /// token. The comparison of the secret bytes is constant-time.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let mut raw = [0u8; TOKEN_LEN];
        let ok_len = match presented.len() {
            TOKEN_LEN => {
                raw.copy_from_slice(presented);
                true
            }
            n if n == 2 * TOKEN_LEN => hex::decode_to_slice(presented, &mut raw).is_ok(),
            _ => false,
        };
        let equal: bool = self.0.ct_eq(&raw).into();
        raw.zeroize();
        ok_len && equal
    }

    /// The token file's path in `dir`.
    pub fn file_path(dir: &Path) -> PathBuf {
        dir.join(TOKEN_FILE_NAME)
    }

    /// Generates a token and writes it to `dir/ipc.token` (see [`Self::write_file`]).
    pub fn create_file(dir: &Path) -> io::Result<(CapabilityToken, PathBuf)> {
        let token = CapabilityToken::generate();
        let path = token.write_file(dir)?;
        Ok((token, path))
    }

    /// Writes the token to `dir/ipc.token`, replacing a stale file. The file is created
    /// exclusively with mode 0600 (`O_CREAT|O_EXCL`, which also refuses to follow a planted
    /// symlink), so it is never readable by others, not even between create and chmod.
    pub fn write_file(&self, dir: &Path) -> io::Result<PathBuf> {
        let path = Self::file_path(dir);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path)?;
        let mut text = self.to_hex();
        text.push('\n');
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        text.zeroize();
        written?;
        Ok(path)
    }

    /// Reads `dir/ipc.token`.
    pub fn read_file(dir: &Path) -> io::Result<CapabilityToken> {
        let path = Self::file_path(dir);
        let mut text = fs::read_to_string(&path)?;
        let token = CapabilityToken::from_hex(&text);
        text.zeroize();
        token.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a {TOKEN_LEN}-byte hex token",
                    path.display()
                ),
            )
        })
    }

    /// Removes `dir/ipc.token` (at clean shutdown). Missing is fine.
    pub fn remove_file(dir: &Path) -> io::Result<()> {
        match fs::remove_file(Self::file_path(dir)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_raw_hex_and_wrong() {
        let t = CapabilityToken::from_bytes([0xab; 32]);
        assert!(t.verify(&[0xab; 32]));
        assert!(t.verify(t.to_hex().as_bytes()));
        assert!(t.verify(t.to_hex().to_uppercase().as_bytes()));
        assert!(!t.verify(&[0xab; 31]));
        assert!(!t.verify(&[0xab; 33]));
        assert!(!t.verify(&[0xac; 32]));
        assert!(!t.verify(b""));
        assert!(!t.verify(&[b'z'; 64]));
        assert!(!CapabilityToken::from_bytes([0; 32]).verify(&[b'z'; 64]));
        assert_ne!(CapabilityToken::generate(), CapabilityToken::generate());
        assert_eq!(format!("{t:?}"), "CapabilityToken(..)");
    }

    #[test]
    fn file_round_trip_replaces_stale() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE_NAME), "stale").unwrap();
        let (t, path) = CapabilityToken::create_file(dir.path()).unwrap();
        assert_eq!(CapabilityToken::read_file(dir.path()).unwrap(), t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        CapabilityToken::remove_file(dir.path()).unwrap();
        CapabilityToken::remove_file(dir.path()).unwrap();
        assert!(CapabilityToken::read_file(dir.path()).is_err());
        std::fs::write(&path, "not hex").unwrap();
        assert_eq!(
            CapabilityToken::read_file(dir.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
