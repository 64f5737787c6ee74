//! The format of a state file (PyTorch's `torch.save` or safetensors), told by its first
//! bytes: what [`crate::state`] (to name a `.pth` given where safetensors is expected) and
//! [`crate::pytorch`] (to read either) both ask.

use std::io::Read;
use std::path::Path;

use crate::error::{ModelError, Result};

/// The format of a state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFormat {
    /// PyTorch's `torch.save`: a zip archive (PyTorch >= 1.6) or the legacy pickle.
    PyTorch,
    /// safetensors.
    Safetensors,
}

impl StateFormat {
    /// The format the first bytes of a file show: a zip signature (`PK\x03\x04`) or a pickle
    /// protocol opcode (`\x80`) is PyTorch's; anything else is taken for safetensors, whose
    /// parser then names what is wrong.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
            Self::PyTorch
        } else {
            Self::Safetensors
        }
    }

    /// The format of the file at `path`, from its first bytes.
    pub fn of_file(path: &Path) -> Result<Self> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut head = [0u8; 4];
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut n = 0;
        while n < head.len() {
            match file.read(&mut head[n..]).map_err(io)? {
                0 => break,
                k => n += k,
            }
        }
        Ok(Self::sniff(&head[..n]))
    }

    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::PyTorch => "PyTorch (torch.save)",
            Self::Safetensors => "safetensors",
        }
    }
}
