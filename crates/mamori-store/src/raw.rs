//! Prepared statements on the raw SQLite handle of an sqlx connection, for the one hot path that
//! needs them: writing event batches.
//!
//! Why: binding through sqlx's `query().bind()` costs about as much per row as SQLite's own insert
//! work, and import measured 214–244k events/s that way against 404k/s with the same statements
//! on the raw handle (docs/benchmarks.md). The connection, its transaction and every read stay
//! with sqlx; rusqlite cannot be linked next to sqlx-sqlite (both link `sqlite3`).
//!
//! Safety: a [`Stmt`] borrows the [`Conn`], which borrows sqlx's locked handle, so no statement
//! outlives the connection lock. Parameters are bound with `SQLITE_STATIC` only for the duration
//! of one [`Stmt::exec`]/[`Stmt::query_i64`] call, which resets the statement and clears its
//! bindings before returning, so SQLite never holds a pointer past the borrow.

use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

use libsqlite3_sys as ffi;

use crate::StoreError;

/// A borrowed, locked SQLite connection.
pub(crate) struct Conn<'h> {
    db: NonNull<ffi::sqlite3>,
    _lock: PhantomData<&'h mut ()>,
}

/// A parameter value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> From<Option<i64>> for Value<'a> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl<'h> Conn<'h> {
    /// Wraps the handle of a locked sqlx connection.
    ///
    /// # Safety
    /// `db` must be a valid open connection that this thread may use exclusively for `'h`
    /// (sqlx's `LockedSqliteHandle` guarantees both while it is borrowed).
    pub(crate) unsafe fn new(db: NonNull<ffi::sqlite3>) -> Self {
        Conn {
            db,
            _lock: PhantomData,
        }
    }

    fn error(&self, code: c_int) -> StoreError {
        // SAFETY: the handle is valid (see `new`); errmsg returns a NUL-terminated string owned
        // by SQLite, copied out at once.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db.as_ptr())) }
            .to_string_lossy()
            .into_owned();
        StoreError::Sqlite { code, message }
    }

    /// Prepares a statement.
    pub(crate) fn prepare<'c>(&'c self, sql: &str) -> Result<Stmt<'c, 'h>, StoreError> {
        let mut stmt: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        let len = c_int::try_from(sql.len()).map_err(|_| StoreError::Sqlite {
            code: ffi::SQLITE_TOOBIG,
            message: "statement too long".into(),
        })?;
        // SAFETY: sql points to len valid bytes; stmt receives a new statement or null.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                self.db.as_ptr(),
                sql.as_ptr().cast(),
                len,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.error(rc));
        }
        let stmt = NonNull::new(stmt).ok_or_else(|| StoreError::Sqlite {
            code: ffi::SQLITE_MISUSE,
            message: format!("empty statement: {sql}"),
        })?;
        Ok(Stmt { conn: self, stmt })
    }

    /// Rows changed by the last statement.
    fn changes(&self) -> u64 {
        // SAFETY: valid handle.
        unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) as u64 }
    }

    /// The rowid of the last successful insert.
    fn last_insert_rowid(&self) -> i64 {
        // SAFETY: valid handle.
        unsafe { ffi::sqlite3_last_insert_rowid(self.db.as_ptr()) }
    }
}

/// A prepared statement; finalized on drop.
pub(crate) struct Stmt<'c, 'h> {
    conn: &'c Conn<'h>,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Drop for Stmt<'_, '_> {
    fn drop(&mut self) {
        // SAFETY: the statement is valid and finalized once.
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

impl Stmt<'_, '_> {
    fn bind(&mut self, params: &[Value<'_>]) -> Result<(), StoreError> {
        let s = self.stmt.as_ptr();
        for (i, v) in params.iter().enumerate() {
            let i = (i + 1) as c_int;
            // SAFETY: valid statement; text and blob pointers stay valid until `finish` clears
            // the bindings, within the caller's borrow of `params`.
            let rc = unsafe {
                match *v {
                    Value::Null => ffi::sqlite3_bind_null(s, i),
                    Value::Int(n) => ffi::sqlite3_bind_int64(s, i, n),
                    Value::Text(t) => ffi::sqlite3_bind_text64(
                        s,
                        i,
                        t.as_ptr().cast(),
                        t.len() as u64,
                        ffi::SQLITE_STATIC(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    Value::Blob(b) => ffi::sqlite3_bind_blob64(
                        s,
                        i,
                        b.as_ptr().cast(),
                        b.len() as u64,
                        ffi::SQLITE_STATIC(),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                self.finish();
                return Err(self.conn.error(rc));
            }
        }
        Ok(())
    }

    /// Resets the statement and drops every binding.
    fn finish(&mut self) {
        // SAFETY: valid statement. reset's return code repeats the last step's error, which the
        // caller has already seen.
        unsafe {
            ffi::sqlite3_reset(self.stmt.as_ptr());
            ffi::sqlite3_clear_bindings(self.stmt.as_ptr());
        }
    }

    fn step(&mut self) -> c_int {
        // SAFETY: valid statement with its parameters bound.
        unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) }
    }

    /// Runs a statement that returns no rows; returns the number of rows it changed.
    pub(crate) fn exec(&mut self, params: &[Value<'_>]) -> Result<u64, StoreError> {
        self.bind(params)?;
        let rc = self.step();
        let out = match rc {
            ffi::SQLITE_DONE => Ok(self.conn.changes()),
            ffi::SQLITE_ROW => Err(StoreError::Sqlite {
                code: ffi::SQLITE_MISUSE,
                message: "a write statement returned rows".into(),
            }),
            _ => Err(self.conn.error(rc)),
        };
        self.finish();
        out
    }

    /// Runs an insert; returns the new rowid, or `None` when nothing was inserted.
    pub(crate) fn insert(&mut self, params: &[Value<'_>]) -> Result<Option<i64>, StoreError> {
        Ok((self.exec(params)? == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// Runs a query and calls `f` on each row.
    pub(crate) fn for_each(
        &mut self,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.bind(params)?;
        let out = loop {
            match self.step() {
                ffi::SQLITE_ROW => {
                    let row = Row {
                        stmt: self.stmt,
                        _borrow: PhantomData,
                    };
                    if let Err(e) = f(&row) {
                        break Err(e);
                    }
                }
                ffi::SQLITE_DONE => break Ok(()),
                rc => break Err(self.conn.error(rc)),
            }
        };
        self.finish();
        out
    }

    /// Runs a query; returns the first column of its first row as an integer.
    pub(crate) fn query_i64(&mut self, params: &[Value<'_>]) -> Result<Option<i64>, StoreError> {
        self.bind(params)?;
        let rc = self.step();
        let out = match rc {
            // SAFETY: the statement has a current row.
            ffi::SQLITE_ROW => Ok(Some(unsafe {
                ffi::sqlite3_column_int64(self.stmt.as_ptr(), 0)
            })),
            ffi::SQLITE_DONE => Ok(None),
            _ => Err(self.conn.error(rc)),
        };
        self.finish();
        out
    }
}

/// The current row of a statement, valid during one callback of [`Stmt::for_each`].
pub(crate) struct Row<'s> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    _borrow: PhantomData<&'s ()>,
}

impl Row<'_> {
    fn is_null(&self, i: c_int) -> bool {
        // SAFETY: the statement has a current row (see `for_each`).
        unsafe { ffi::sqlite3_column_type(self.stmt.as_ptr(), i) == ffi::SQLITE_NULL }
    }

    /// An integer column (0 for NULL).
    pub(crate) fn i64(&self, i: c_int) -> i64 {
        // SAFETY: current row; out-of-range columns read as NULL (0).
        unsafe { ffi::sqlite3_column_int64(self.stmt.as_ptr(), i) }
    }

    /// An integer column that may be NULL.
    pub(crate) fn opt_i64(&self, i: c_int) -> Option<i64> {
        (!self.is_null(i)).then(|| self.i64(i))
    }

    /// A BLOB column that may be NULL.
    pub(crate) fn blob(&self, i: c_int) -> Option<&[u8]> {
        if self.is_null(i) {
            return None;
        }
        // SAFETY: current row; the pointer stays valid until the next step/reset, which cannot
        // happen while `self` is borrowed. bytes is called after blob, as SQLite requires.
        unsafe {
            let p = ffi::sqlite3_column_blob(self.stmt.as_ptr(), i);
            let n = ffi::sqlite3_column_bytes(self.stmt.as_ptr(), i);
            if p.is_null() || n <= 0 {
                Some(&[])
            } else {
                Some(std::slice::from_raw_parts(p.cast::<u8>(), n as usize))
            }
        }
    }

    /// A TEXT column that may be NULL.
    pub(crate) fn text(&self, i: c_int) -> Result<Option<&str>, StoreError> {
        if self.is_null(i) {
            return Ok(None);
        }
        // SAFETY: as for `blob`.
        let bytes = unsafe {
            let p = ffi::sqlite3_column_text(self.stmt.as_ptr(), i);
            let n = ffi::sqlite3_column_bytes(self.stmt.as_ptr(), i);
            if p.is_null() || n <= 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(p, n as usize)
            }
        };
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StoreError::Corrupt("text column is not UTF-8".into()))
    }

    /// A TEXT column that must not be NULL.
    pub(crate) fn string(&self, i: c_int) -> Result<String, StoreError> {
        self.text(i)?
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }
}
