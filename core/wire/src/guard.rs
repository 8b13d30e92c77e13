//! A bounds check of request bodies before they reach the `kafka-protocol` decoder.
//!
//! The decoder sizes each array's allocation from the count on the wire, before reading a single
//! element. A request of a few bytes that claims two billion elements would make it ask for
//! hundreds of gigabytes. This guard walks the body first, field by field from a schema of the
//! message (see [`super::schemas`]), and refuses any count, string or bytes length that the bytes
//! still present cannot hold. The decoder then only ever allocates in proportion to bytes that
//! actually arrived, and those are bounded by `max_request_bytes`.
//!
//! The schemas describe each version's layout as Kafka's message definitions give it: which
//! fields exist in which versions, and from which version a message is flexible (compact
//! lengths and tagged fields). Known tagged fields are checked to fill exactly their declared
//! size, since the decoder reads them by type rather than by size.

/// A field's wire type.
#[derive(Debug)]
pub(crate) enum Ty {
    /// One byte (int8 or boolean).
    I8,
    /// int16.
    I16,
    /// int32.
    I32,
    /// int64.
    I64,
    /// 16-byte UUID.
    Uuid,
    /// String (nullable or not; the decoder enforces nullability).
    Str,
    /// Bytes or records (nullable or not).
    Bytes,
    /// Array of structs with these fields.
    Arr(&'static [Field]),
    /// Array of a primitive or string type.
    ArrOf(&'static Ty),
    /// A nested struct (not in an array).
    Struct(&'static [Field]),
}

/// A field present in versions `min..=max`. A `tag` makes it a tagged field.
#[derive(Debug)]
pub(crate) struct Field {
    pub ty: Ty,
    pub min: i16,
    pub max: i16,
    pub tag: Option<u32>,
}

/// A field present in every version.
pub(crate) const fn all(ty: Ty) -> Field {
    Field {
        ty,
        min: 0,
        max: i16::MAX,
        tag: None,
    }
}
/// A field present from version `v` on.
pub(crate) const fn since(v: i16, ty: Ty) -> Field {
    Field {
        ty,
        min: v,
        max: i16::MAX,
        tag: None,
    }
}
/// A field present up to and including version `v`.
pub(crate) const fn until(v: i16, ty: Ty) -> Field {
    Field {
        ty,
        min: 0,
        max: v,
        tag: None,
    }
}
/// A field present in versions `a..=b`.
pub(crate) const fn between(a: i16, b: i16, ty: Ty) -> Field {
    Field {
        ty,
        min: a,
        max: b,
        tag: None,
    }
}
/// A tagged field with tag `tag`, from version `v` on.
pub(crate) const fn tagged(tag: u32, v: i16, ty: Ty) -> Field {
    Field {
        ty,
        min: v,
        max: i16::MAX,
        tag: Some(tag),
    }
}

/// The layout of one request type.
#[derive(Debug)]
pub(crate) struct Schema {
    /// Lowest version described.
    pub min: i16,
    /// Highest version described.
    pub max: i16,
    /// First flexible version.
    pub flexible_from: i16,
    /// Top-level fields.
    pub fields: &'static [Field],
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request body at byte {at}: {what}")]
pub struct GuardError {
    /// Where the walk stopped.
    pub at: usize,
    /// What was wrong.
    pub what: String,
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
}

impl<'a> Walker<'a> {
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, GuardError> {
        Err(GuardError {
            at: self.pos,
            what: what.into(),
        })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), GuardError> {
        if n > self.remaining() {
            return self.fail(format!("{what} needs {n} bytes, {} left", self.remaining()));
        }
        self.pos += n;
        Ok(())
    }

    fn be(&mut self, n: usize) -> Result<i64, GuardError> {
        if n > self.remaining() {
            return self.fail("truncated");
        }
        let v = self.buf[self.pos..self.pos + n]
            .iter()
            .fold(0i64, |acc, b| (acc << 8) | i64::from(*b));
        self.pos += n;
        // Sign-extend from n bytes.
        let shift = 64 - 8 * n as u32;
        Ok((v << shift) >> shift)
    }

    fn uvarint(&mut self) -> Result<u64, GuardError> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let Some(&b) = self.buf.get(self.pos) else {
                return self.fail("truncated varint");
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail("varint longer than 5 bytes")
    }

    /// Reads a length or count; `None` means null.
    fn length(&mut self, width: usize) -> Result<Option<usize>, GuardError> {
        let n = if self.flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => n - 1,
            }
        } else {
            match self.be(width)? {
                -1 => return Ok(None),
                n if n < 0 => return self.fail(format!("negative length {n}")),
                n => n as u64,
            }
        };
        if n > self.remaining() as u64 {
            return self.fail(format!(
                "length {n} is more than the {} bytes left",
                self.remaining()
            ));
        }
        Ok(Some(n as usize))
    }

    fn walk_ty(&mut self, ty: &Ty) -> Result<(), GuardError> {
        match ty {
            Ty::I8 => self.skip(1, "int8"),
            Ty::I16 => self.skip(2, "int16"),
            Ty::I32 => self.skip(4, "int32"),
            Ty::I64 => self.skip(8, "int64"),
            Ty::Uuid => self.skip(16, "uuid"),
            Ty::Str => {
                let n = self.length(2)?;
                self.skip(n.unwrap_or(0), "string")
            }
            Ty::Bytes => {
                let n = self.length(4)?;
                self.skip(n.unwrap_or(0), "bytes")
            }
            Ty::Arr(fields) => {
                let n = self.length(4)?.unwrap_or(0);
                for _ in 0..n {
                    self.walk_struct(fields)?;
                }
                Ok(())
            }
            Ty::Struct(fields) => self.walk_struct(fields),
            Ty::ArrOf(inner) => {
                let n = self.length(4)?.unwrap_or(0);
                for _ in 0..n {
                    self.walk_ty(inner)?;
                }
                Ok(())
            }
        }
    }

    fn walk_struct(&mut self, fields: &[Field]) -> Result<(), GuardError> {
        let v = self.version;
        for f in fields
            .iter()
            .filter(|f| f.tag.is_none() && (f.min..=f.max).contains(&v))
        {
            self.walk_ty(&f.ty)?;
        }
        if self.flexible {
            self.walk_tags(fields)?;
        }
        Ok(())
    }

    fn walk_tags(&mut self, fields: &[Field]) -> Result<(), GuardError> {
        let count = self.uvarint()?;
        if count > self.remaining() as u64 {
            return self.fail(format!(
                "{count} tagged fields with {} bytes left",
                self.remaining()
            ));
        }
        for _ in 0..count {
            let tag = self.uvarint()?;
            let size = self.uvarint()? as usize;
            if size > self.remaining() {
                return self.fail(format!(
                    "tagged field of {size} bytes with {} left",
                    self.remaining()
                ));
            }
            let known = fields.iter().find(|f| {
                f.tag.map(u64::from) == Some(tag) && (f.min..=f.max).contains(&self.version)
            });
            match known {
                Some(f) => {
                    let end = self.pos + size;
                    self.walk_ty(&f.ty)?;
                    if self.pos != end {
                        return self
                            .fail(format!("tagged field {tag} does not fill its {size} bytes"));
                    }
                }
                None => self.pos += size,
            }
        }
        Ok(())
    }
}

/// Checks that `body` (the request after its header) is a well-bounded message of `schema` at
/// `version`, and that nothing follows it.
pub(crate) fn check(schema: &Schema, version: i16, body: &[u8]) -> Result<(), GuardError> {
    debug_assert!(
        (schema.min..=schema.max).contains(&version),
        "version checked before the guard"
    );
    let mut w = Walker {
        buf: body,
        pos: 0,
        version,
        flexible: version >= schema.flexible_from,
    };
    w.walk_struct(schema.fields)?;
    if w.remaining() != 0 {
        return w.fail(format!("{} bytes after the message", w.remaining()));
    }
    Ok(())
}
