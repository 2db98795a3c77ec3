//! Prepared statements on the raw SQLite handle of an sqlx connection (batch writes, large reads)
//! or of a connection of our own ([`OwnedConn`]: the server's short reads, statements kept
//! prepared, no hand-off to another thread).
//!
//! Why: binding through sqlx's `query().bind()` costs about as much per row as SQLite's own insert
//! work (import measured 214–244k events/s that way against 404k/s on the raw handle), sqlx's
//! per-row decoding made the 1 M investigation 4× slower, and its per-connection worker thread
//! costs more than a short read (docs/benchmarks.md). Transactions and migrations stay with
//! sqlx; rusqlite cannot be linked next to sqlx-sqlite (both link `sqlite3`).
//!
//! Safety: a [`Stmt`] borrows the [`Conn`], which borrows sqlx's locked handle, so no statement
//! outlives the connection lock. Parameters are bound with `SQLITE_STATIC` only for the duration
//! of one [`Stmt::exec`]/[`Stmt::query_i64`] call, which resets the statement and clears its
//! bindings before returning, so SQLite never holds a pointer past the borrow.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, c_int};
use std::marker::PhantomData;
use std::ptr::NonNull;

use libsqlite3_sys as ffi;

use crate::StoreError;

/// A borrowed, locked SQLite connection; with a statement cache when it is one of ours
/// ([`OwnedConn`]).
pub(crate) struct Conn<'h> {
    db: NonNull<ffi::sqlite3>,
    cache: Option<&'h StmtCache>,
    _lock: PhantomData<&'h mut ()>,
}

/// Prepared statements kept for a connection's life, by SQL text. A statement in use is taken
/// out, so the same text prepared twice at once gets two statements.
pub(crate) type StmtCache = RefCell<HashMap<String, NonNull<ffi::sqlite3_stmt>>>;

/// Statements kept per connection at most.
const CACHED_STATEMENTS: usize = 64;

/// A connection of our own (not sqlx's), for short reads on the calling thread: no hand-off to a
/// worker thread, and statements prepared once. Used by one thread at a time (the store keeps
/// them in a pool).
pub(crate) struct OwnedConn {
    db: NonNull<ffi::sqlite3>,
    cache: StmtCache,
    /// Where the WAL hook writes the frames in the WAL after each commit (kept alive as long as
    /// the connection, which holds a pointer to it).
    wal_frames: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

/// SQLite's WAL hook: called after each commit with the frames now in the WAL.
unsafe extern "C" fn note_wal_frames(
    arg: *mut std::ffi::c_void,
    _db: *mut ffi::sqlite3,
    _name: *const std::ffi::c_char,
    frames: c_int,
) -> c_int {
    // SAFETY: `arg` is the AtomicI64 of the OwnedConn that installed the hook, which outlives
    // the connection (it is dropped after sqlite3_close).
    let frames_now = unsafe { &*(arg as *const std::sync::atomic::AtomicI64) };
    frames_now.store(i64::from(frames), std::sync::atomic::Ordering::Relaxed);
    ffi::SQLITE_OK
}

impl std::fmt::Debug for OwnedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedConn").finish_non_exhaustive()
    }
}

// SAFETY: the connection is opened with SQLITE_OPEN_FULLMUTEX-free flags but only ever used by
// one thread at a time (it is taken from a mutex-guarded pool and returned after use); SQLite
// connections may move between threads.
unsafe impl Send for OwnedConn {}

impl OwnedConn {
    /// Opens an existing store file for reads.
    pub(crate) fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        Self::open_with(
            path,
            &[
                "PRAGMA query_only = 1",
                "PRAGMA busy_timeout = 30000",
                "PRAGMA cache_size = -65536",
                "PRAGMA mmap_size = 68719476736",
                "PRAGMA temp_store = memory",
            ],
        )
    }

    /// Opens an existing store file (in WAL mode already) for the store's writes, with the
    /// settings of the sqlx pool's connections.
    pub(crate) fn open_writer(
        path: &std::path::Path,
        synchronous_full: bool,
        wal_frames: std::sync::Arc<std::sync::atomic::AtomicI64>,
    ) -> Result<Self, StoreError> {
        let mut conn = Self::open_with(
            path,
            &[
                "PRAGMA busy_timeout = 30000",
                "PRAGMA cache_size = -262144",
                "PRAGMA mmap_size = 68719476736",
                "PRAGMA temp_store = memory",
                "PRAGMA wal_autocheckpoint = 0",
                if synchronous_full {
                    "PRAGMA synchronous = FULL"
                } else {
                    "PRAGMA synchronous = NORMAL"
                },
            ],
        )?;
        // SAFETY: the hook's argument points into the Arc the connection keeps until after it
        // is closed (fields drop after Drop::drop, which closes the connection).
        unsafe {
            ffi::sqlite3_wal_hook(
                conn.db.as_ptr(),
                Some(note_wal_frames),
                std::sync::Arc::as_ptr(&wal_frames) as *mut std::ffi::c_void,
            );
        }
        conn.wal_frames = Some(wal_frames);
        Ok(conn)
    }

    fn open_with(path: &std::path::Path, pragmas: &[&str]) -> Result<Self, StoreError> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            StoreError::Sqlite {
                code: ffi::SQLITE_CANTOPEN,
                message: "the store path contains a NUL byte".into(),
            }
        })?;
        let mut db: *mut ffi::sqlite3 = std::ptr::null_mut();
        // SAFETY: c_path is NUL-terminated; db receives a handle (possibly with an error).
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c_path.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX,
                std::ptr::null(),
            )
        };
        let Some(db) = NonNull::new(db) else {
            return Err(StoreError::Sqlite {
                code: rc,
                message: "out of memory opening a connection".into(),
            });
        };
        let conn = OwnedConn {
            db,
            cache: RefCell::default(),
            wal_frames: None,
        };
        if rc != ffi::SQLITE_OK {
            return Err(conn.conn().error(rc));
        }
        for pragma in pragmas {
            conn.conn().prepare(pragma)?.for_each(&[], |_| Ok(()))?;
        }
        Ok(conn)
    }

    pub(crate) fn conn(&self) -> Conn<'_> {
        Conn {
            db: self.db,
            cache: Some(&self.cache),
            _lock: PhantomData,
        }
    }
}

impl Drop for OwnedConn {
    fn drop(&mut self) {
        // SAFETY: every cached statement belongs to this connection and is finalized once,
        // before the connection closes; no statement is in use (they borrow the connection).
        unsafe {
            for (_, s) in self.cache.get_mut().drain() {
                ffi::sqlite3_finalize(s.as_ptr());
            }
            ffi::sqlite3_close(self.db.as_ptr());
        }
    }
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
            cache: None,
            _lock: PhantomData,
        }
    }

    /// Whether no transaction is open.
    pub(crate) fn autocommit(&self) -> bool {
        // SAFETY: the handle is valid (see `new`).
        unsafe { ffi::sqlite3_get_autocommit(self.db.as_ptr()) != 0 }
    }

    fn error(&self, code: c_int) -> StoreError {
        // SAFETY: the handle is valid (see `new`); errmsg returns a NUL-terminated string owned
        // by SQLite, copied out at once.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.db.as_ptr())) }
            .to_string_lossy()
            .into_owned();
        StoreError::Sqlite { code, message }
    }

    /// Prepares a statement (or takes it from the connection's cache).
    pub(crate) fn prepare<'c>(&'c self, sql: &str) -> Result<Stmt<'c, 'h>, StoreError> {
        if let Some(cache) = self.cache
            && let Some(stmt) = cache.borrow_mut().remove(sql)
        {
            return Ok(Stmt {
                conn: self,
                stmt,
                cached: Some(sql.to_owned()),
            });
        }
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
        Ok(Stmt {
            conn: self,
            stmt,
            cached: self.cache.map(|_| sql.to_owned()),
        })
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

/// A prepared statement; finalized on drop, or reset and returned to its connection's cache.
pub(crate) struct Stmt<'c, 'h> {
    conn: &'c Conn<'h>,
    stmt: NonNull<ffi::sqlite3_stmt>,
    /// The SQL text, when the statement goes back to a cache.
    cached: Option<String>,
}

impl Drop for Stmt<'_, '_> {
    fn drop(&mut self) {
        if let (Some(sql), Some(cache)) = (self.cached.take(), self.conn.cache) {
            let mut cache = cache.borrow_mut();
            if cache.len() < CACHED_STATEMENTS && !cache.contains_key(&sql) {
                self.finish();
                cache.insert(sql, self.stmt);
                return;
            }
        }
        // SAFETY: the statement is valid and finalized once (it is not in a cache).
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
