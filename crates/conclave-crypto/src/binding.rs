//! What a key or a ciphertext belongs to, and the canonical bytes of that, used as AES-GCM
//! associated data so that bytes copied into another row, field or tenant fail to decrypt.
//!
//! # Binding encoding, version 1
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 1 | binding encoding version, `0x01` |
//! | 1 | 1 | purpose code (table below) |
//! | 2 | 16 | tenant id, the UUID's 16 bytes in RFC 9562 order |
//! | 18 | 1 | `n`, the number of id fields that follow (0 to 7) |
//! | 19 | … | `n` fields, each `[tag u8][length u8][value]`, tags strictly increasing |
//!
//! | tag | field | value |
//! |---|---|---|
//! | 1 | library | UUID, 16 bytes |
//! | 2 | conversation | UUID, 16 bytes |
//! | 3 | message | UUID, 16 bytes |
//! | 4 | agent | UUID, 16 bytes |
//! | 5 | document | UUID, 16 bytes |
//! | 6 | document version | u64, big-endian, 8 bytes |
//! | 7 | field name | UTF-8, 1 to 128 bytes of `[a-z0-9_.-]` |
//!
//! | code | purpose | fields the typed constructor sets |
//! |---|---|---|
//! | 1 | TEK, wrapped by the KEK | — |
//! | 2 | LEK, wrapped by the KEK | library |
//! | 3 | CEK, wrapped by the KEK | conversation |
//! | 4 | FEK, wrapped by the LEK | library, document, document version |
//! | 16 | message content, under the CEK | conversation, message |
//! | 17 | conversation title, under the CEK | conversation |
//! | 18 | agent field (name, description, instructions), under the TEK | agent, field name |
//! | 19 | document name, under the LEK | library, document |
//! | 20 | document content segments, under the FEK | library, document, document version |
//! | 21 | library field (name, description), under the TEK | library, field name |
//! | 22 | tenant field (settings), under the TEK | field name |
//!
//! The encoding is injective: every field has a fixed place or a tag and a length, the field
//! count makes the encoding prefix-free (so `binding ‖ header` is unambiguous too), and
//! [`Binding::decode`] accepts exactly the encodings [`Binding::to_bytes`] produces.

use std::fmt;

use uuid::Uuid;

use crate::error::{CryptoError, Result};

/// Version byte of the binding encoding.
pub const BINDING_VERSION: u8 = 1;

/// What a key or a ciphertext is for. The codes are part of the stored format: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Purpose {
    Tek,
    Lek,
    Cek,
    Fek,
    MessageContent,
    ConversationTitle,
    AgentField,
    DocumentName,
    DocumentSegment,
    LibraryField,
    TenantField,
}

impl Purpose {
    /// Every purpose, in code order.
    pub const ALL: [Purpose; 11] = [
        Purpose::Tek,
        Purpose::Lek,
        Purpose::Cek,
        Purpose::Fek,
        Purpose::MessageContent,
        Purpose::ConversationTitle,
        Purpose::AgentField,
        Purpose::DocumentName,
        Purpose::DocumentSegment,
        Purpose::LibraryField,
        Purpose::TenantField,
    ];

    /// The byte stored in the binding.
    pub const fn code(self) -> u8 {
        match self {
            Purpose::Tek => 1,
            Purpose::Lek => 2,
            Purpose::Cek => 3,
            Purpose::Fek => 4,
            Purpose::MessageContent => 16,
            Purpose::ConversationTitle => 17,
            Purpose::AgentField => 18,
            Purpose::DocumentName => 19,
            Purpose::DocumentSegment => 20,
            Purpose::LibraryField => 21,
            Purpose::TenantField => 22,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.code() == code)
    }
}

/// The name of an encrypted field (`name`, `description`, `instructions`, a setting's key):
/// 1 to 128 bytes of lowercase ASCII letters, digits, `_`, `.` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldName(String);

impl FieldName {
    pub const MAX_LEN: usize = 128;

    pub fn new(name: &str) -> Result<Self> {
        if Self::valid(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(CryptoError::InvalidInput("a field name is 1 to 128 bytes of [a-z0-9_.-]"))
        }
    }

    /// For names written in the program. Panics on an invalid name, which is a programming error
    /// caught by the first test that uses it.
    pub fn from_static(name: &'static str) -> Self {
        assert!(Self::valid(name), "invalid field name {name:?}");
        Self(name.to_owned())
    }

    fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= Self::MAX_LEN
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const TAG_LIBRARY: u8 = 1;
const TAG_CONVERSATION: u8 = 2;
const TAG_MESSAGE: u8 = 3;
const TAG_AGENT: u8 = 4;
const TAG_DOCUMENT: u8 = 5;
const TAG_DOCUMENT_VERSION: u8 = 6;
const TAG_FIELD: u8 = 7;
const FIXED_LEN: usize = 19;

/// What a key or ciphertext belongs to. Build it with the typed constructor for its purpose
/// ([`Binding::lek`], [`Binding::message_content`], …), which sets exactly the ids that purpose
/// needs; the general builder ([`Binding::new`] and the `with_*` methods) is there for purposes
/// added later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    purpose: Purpose,
    tenant: Uuid,
    library: Option<Uuid>,
    conversation: Option<Uuid>,
    message: Option<Uuid>,
    agent: Option<Uuid>,
    document: Option<Uuid>,
    document_version: Option<u64>,
    field: Option<FieldName>,
}

impl Binding {
    /// A binding with only a purpose and a tenant; add ids with the `with_*` methods.
    pub fn new(purpose: Purpose, tenant: Uuid) -> Self {
        Self {
            purpose,
            tenant,
            library: None,
            conversation: None,
            message: None,
            agent: None,
            document: None,
            document_version: None,
            field: None,
        }
    }

    /// The tenant's TEK, wrapped by the KEK.
    pub fn tek(tenant: Uuid) -> Self {
        Self::new(Purpose::Tek, tenant)
    }

    /// A library's LEK, wrapped by the KEK.
    pub fn lek(tenant: Uuid, library: Uuid) -> Self {
        Self::new(Purpose::Lek, tenant).with_library(library)
    }

    /// A conversation's CEK, wrapped by the KEK.
    pub fn cek(tenant: Uuid, conversation: Uuid) -> Self {
        Self::new(Purpose::Cek, tenant).with_conversation(conversation)
    }

    /// A document version's FEK, wrapped by the library's LEK.
    pub fn fek(tenant: Uuid, library: Uuid, document: Uuid, version: u64) -> Self {
        Self::new(Purpose::Fek, tenant).with_library(library).with_document(document).with_document_version(version)
    }

    /// A message's text, sealed under its conversation's CEK.
    pub fn message_content(tenant: Uuid, conversation: Uuid, message: Uuid) -> Self {
        Self::new(Purpose::MessageContent, tenant).with_conversation(conversation).with_message(message)
    }

    /// A conversation's title, sealed under its CEK.
    pub fn conversation_title(tenant: Uuid, conversation: Uuid) -> Self {
        Self::new(Purpose::ConversationTitle, tenant).with_conversation(conversation)
    }

    /// One field of an agent (name, description, instructions), sealed under the TEK.
    pub fn agent_field(tenant: Uuid, agent: Uuid, field: FieldName) -> Self {
        Self::new(Purpose::AgentField, tenant).with_agent(agent).with_field(field)
    }

    /// A document's name, sealed under its library's LEK.
    pub fn document_name(tenant: Uuid, library: Uuid, document: Uuid) -> Self {
        Self::new(Purpose::DocumentName, tenant).with_library(library).with_document(document)
    }

    /// The content segments of a document version, under its FEK.
    pub fn document_segment(tenant: Uuid, library: Uuid, document: Uuid, version: u64) -> Self {
        Self::new(Purpose::DocumentSegment, tenant)
            .with_library(library)
            .with_document(document)
            .with_document_version(version)
    }

    /// One field of a library (name, description), sealed under the TEK.
    pub fn library_field(tenant: Uuid, library: Uuid, field: FieldName) -> Self {
        Self::new(Purpose::LibraryField, tenant).with_library(library).with_field(field)
    }

    /// A tenant-level setting, sealed under the TEK.
    pub fn tenant_field(tenant: Uuid, field: FieldName) -> Self {
        Self::new(Purpose::TenantField, tenant).with_field(field)
    }

    pub fn with_library(mut self, id: Uuid) -> Self {
        self.library = Some(id);
        self
    }
    pub fn with_conversation(mut self, id: Uuid) -> Self {
        self.conversation = Some(id);
        self
    }
    pub fn with_message(mut self, id: Uuid) -> Self {
        self.message = Some(id);
        self
    }
    pub fn with_agent(mut self, id: Uuid) -> Self {
        self.agent = Some(id);
        self
    }
    pub fn with_document(mut self, id: Uuid) -> Self {
        self.document = Some(id);
        self
    }
    pub fn with_document_version(mut self, version: u64) -> Self {
        self.document_version = Some(version);
        self
    }
    pub fn with_field(mut self, field: FieldName) -> Self {
        self.field = Some(field);
        self
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    pub fn tenant(&self) -> Uuid {
        self.tenant
    }
    pub fn library(&self) -> Option<Uuid> {
        self.library
    }
    pub fn conversation(&self) -> Option<Uuid> {
        self.conversation
    }
    pub fn message(&self) -> Option<Uuid> {
        self.message
    }
    pub fn agent(&self) -> Option<Uuid> {
        self.agent
    }
    pub fn document(&self) -> Option<Uuid> {
        self.document
    }
    pub fn document_version(&self) -> Option<u64> {
        self.document_version
    }
    pub fn field(&self) -> Option<&FieldName> {
        self.field.as_ref()
    }

    /// The canonical encoding (module docs), used as associated data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 6 * 18 + 2 + FieldName::MAX_LEN);
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let version = self.document_version.map(u64::to_be_bytes);
        let fields: [(u8, Option<&[u8]>); 7] = [
            (TAG_LIBRARY, self.library.as_ref().map(|u| u.as_bytes().as_slice())),
            (TAG_CONVERSATION, self.conversation.as_ref().map(|u| u.as_bytes().as_slice())),
            (TAG_MESSAGE, self.message.as_ref().map(|u| u.as_bytes().as_slice())),
            (TAG_AGENT, self.agent.as_ref().map(|u| u.as_bytes().as_slice())),
            (TAG_DOCUMENT, self.document.as_ref().map(|u| u.as_bytes().as_slice())),
            (TAG_DOCUMENT_VERSION, version.as_ref().map(|v| v.as_slice())),
            (TAG_FIELD, self.field.as_ref().map(|f| f.as_str().as_bytes())),
        ];
        out.push(BINDING_VERSION);
        out.push(self.purpose.code());
        out.extend_from_slice(self.tenant.as_bytes());
        // At most 7 fields, so the count fits a byte.
        out.push(fields.iter().filter(|(_, v)| v.is_some()).count() as u8);
        for (tag, value) in fields {
            if let Some(value) = value {
                out.push(tag);
                // Every value is at most 128 bytes (FieldName::MAX_LEN), so the length fits a byte.
                out.push(value.len() as u8);
                out.extend_from_slice(value);
            }
        }
    }

    /// Parses a canonical encoding; rejects anything [`Binding::to_bytes`] would not produce.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "binding";
        let bad = |reason| CryptoError::malformed(WHAT, reason);
        if bytes.len() < FIXED_LEN {
            return Err(bad("shorter than its fixed part"));
        }
        if bytes[0] != BINDING_VERSION {
            return Err(CryptoError::UnsupportedVersion { what: WHAT, version: bytes[0] });
        }
        let purpose = Purpose::from_code(bytes[1]).ok_or(bad("unknown purpose"))?;
        let tenant = uuid_from(&bytes[2..18]).ok_or(bad("tenant id"))?;
        let mut binding = Binding::new(purpose, tenant);
        let count = bytes[18];
        let mut rest = &bytes[FIXED_LEN..];
        let mut last_tag = 0u8;
        for _ in 0..count {
            let [tag, len, tail @ ..] = rest else {
                return Err(bad("field header cut short"));
            };
            let len = usize::from(*len);
            if *tag <= last_tag {
                return Err(bad("fields out of order or repeated"));
            }
            last_tag = *tag;
            if tail.len() < len {
                return Err(bad("field value cut short"));
            }
            let (value, tail) = tail.split_at(len);
            rest = tail;
            match *tag {
                TAG_LIBRARY => binding.library = Some(uuid_from(value).ok_or(bad("library id"))?),
                TAG_CONVERSATION => binding.conversation = Some(uuid_from(value).ok_or(bad("conversation id"))?),
                TAG_MESSAGE => binding.message = Some(uuid_from(value).ok_or(bad("message id"))?),
                TAG_AGENT => binding.agent = Some(uuid_from(value).ok_or(bad("agent id"))?),
                TAG_DOCUMENT => binding.document = Some(uuid_from(value).ok_or(bad("document id"))?),
                TAG_DOCUMENT_VERSION => {
                    let v: [u8; 8] = value.try_into().map_err(|_| bad("document version"))?;
                    binding.document_version = Some(u64::from_be_bytes(v));
                }
                TAG_FIELD => {
                    let name = std::str::from_utf8(value).map_err(|_| bad("field name"))?;
                    binding.field = Some(FieldName::new(name).map_err(|_| bad("field name"))?);
                }
                _ => return Err(bad("unknown field tag")),
            }
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(binding)
    }
}

fn uuid_from(value: &[u8]) -> Option<Uuid> {
    Uuid::from_slice(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_codes_are_unique_and_round_trip() {
        let mut codes: Vec<u8> = Purpose::ALL.iter().map(|p| p.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Purpose::ALL.len());
        for p in Purpose::ALL {
            assert_eq!(Purpose::from_code(p.code()), Some(p));
        }
        assert_eq!(Purpose::from_code(0), None);
    }

    #[test]
    fn encoding_is_byte_exact() {
        let tenant = Uuid::from_bytes([1; 16]);
        let conversation = Uuid::from_bytes([2; 16]);
        let message = Uuid::from_bytes([3; 16]);
        let bytes = Binding::message_content(tenant, conversation, message).to_bytes();
        let mut expected = vec![1, 16];
        expected.extend([1; 16]);
        expected.push(2);
        expected.extend([2, 16]);
        expected.extend([2; 16]);
        expected.extend([3, 16]);
        expected.extend([3; 16]);
        assert_eq!(bytes, expected);

        let fek = Binding::fek(tenant, conversation, message, 0x0102).to_bytes();
        assert_eq!(&fek[fek.len() - 10..], &[6, 8, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn decode_rejects_non_canonical_input() {
        let b = Binding::agent_field(Uuid::nil(), Uuid::max(), FieldName::from_static("instructions")).to_bytes();
        assert_eq!(Binding::decode(&b).unwrap().to_bytes(), b);
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(Binding::decode(&trailing).is_err());
        assert!(Binding::decode(&b[..b.len() - 1]).is_err());
        let mut bad_version = b.clone();
        bad_version[0] = 2;
        assert!(matches!(Binding::decode(&bad_version), Err(CryptoError::UnsupportedVersion { .. })));
        // Fields swapped into the wrong order.
        let mut swapped = Binding::new(Purpose::Tek, Uuid::nil()).to_bytes();
        swapped[18] = 2;
        swapped.extend([2, 16]);
        swapped.extend([0; 16]);
        swapped.extend([1, 16]);
        swapped.extend([0; 16]);
        assert!(Binding::decode(&swapped).is_err());
    }

    #[test]
    fn field_names() {
        assert!(FieldName::new("instructions").is_ok());
        assert!(FieldName::new("settings.retention-days_2").is_ok());
        assert!(FieldName::new("").is_err());
        assert!(FieldName::new("Name").is_err());
        assert!(FieldName::new(&"a".repeat(129)).is_err());
    }
}
