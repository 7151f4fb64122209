//! `rbtest`, a Redis module for remoteback's integration tests: write
//! commands that neither the built-in command table nor any Redis release
//! knows, so that only a table read from the server classifies them.
//!
//! - `RBTEST.SETPAIR key1 key2 value`: sets both keys to `value` (flags
//!   `write deny-oom`, keys 1 to 2, step 1), answers `OK`.
//!
//! Written against the module API by hand (`redismodule.h`'s ABI: the API's
//! functions are looked up by name through the pointer the server puts at
//! the start of the context, as `RedisModule_Init` does), instead of with
//! the `redis-module` crate: that crate generates its bindings with bindgen
//! at build time, which needs libclang and a minute of compiling on a small
//! machine, for a module of five API calls.
//!
//! Nothing here is used outside the tests.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// `REDISMODULE_OK` / `REDISMODULE_ERR`.
const OK: c_int = 0;
const ERR: c_int = 1;
/// `REDISMODULE_APIVER_1`.
const APIVER_1: c_int = 1;

#[repr(C)]
pub struct Ctx {
    _private: [u8; 0],
}
#[repr(C)]
pub struct RString {
    _private: [u8; 0],
}

type CmdFunc = unsafe extern "C" fn(*mut Ctx, *mut *mut RString, c_int) -> c_int;
type GetApi = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_int;

/// The API functions the module calls.
struct Api {
    set_module_attribs: unsafe extern "C" fn(*mut Ctx, *const c_char, c_int, c_int),
    create_command: unsafe extern "C" fn(
        *mut Ctx,
        *const c_char,
        CmdFunc,
        *const c_char,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
    wrong_arity: unsafe extern "C" fn(*mut Ctx) -> c_int,
    reply_with_simple_string: unsafe extern "C" fn(*mut Ctx, *const c_char) -> c_int,
    reply_with_error: unsafe extern "C" fn(*mut Ctx, *const c_char) -> c_int,
    call: unsafe extern "C" fn(*mut Ctx, *const c_char, *const c_char, ...) -> *mut c_void,
    free_call_reply: unsafe extern "C" fn(*mut c_void),
    replicate_verbatim: unsafe extern "C" fn(*mut Ctx) -> c_int,
}

static API: OnceLock<Api> = OnceLock::new();

/// The function `name` (NUL-terminated) of the module API, as `T`.
///
/// # Safety
/// `T` must be the function's type in redismodule.h.
unsafe fn lookup<T: Copy>(get_api: GetApi, name: &[u8]) -> Option<T> {
    let mut f: *mut c_void = std::ptr::null_mut();
    let found = unsafe { get_api(name.as_ptr().cast(), (&mut f as *mut *mut c_void).cast()) };
    if found != OK || f.is_null() {
        return None;
    }
    debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    Some(unsafe { std::mem::transmute_copy(&f) })
}

/// # Safety
/// `ctx` is the context redis-server passed to `RedisModule_OnLoad`.
unsafe fn init(ctx: *mut Ctx) -> Option<&'static Api> {
    // RedisModule_Init: the first word of the context is RedisModule_GetApi.
    let get_api: GetApi = unsafe { std::mem::transmute_copy(&*(ctx as *const *mut c_void)) };
    let api = unsafe {
        Api {
            set_module_attribs: lookup(get_api, b"RedisModule_SetModuleAttribs\0")?,
            create_command: lookup(get_api, b"RedisModule_CreateCommand\0")?,
            wrong_arity: lookup(get_api, b"RedisModule_WrongArity\0")?,
            reply_with_simple_string: lookup(get_api, b"RedisModule_ReplyWithSimpleString\0")?,
            reply_with_error: lookup(get_api, b"RedisModule_ReplyWithError\0")?,
            call: lookup(get_api, b"RedisModule_Call\0")?,
            free_call_reply: lookup(get_api, b"RedisModule_FreeCallReply\0")?,
            replicate_verbatim: lookup(get_api, b"RedisModule_ReplicateVerbatim\0")?,
        }
    };
    Some(API.get_or_init(|| api))
}

/// `RBTEST.SETPAIR key1 key2 value`.
unsafe extern "C" fn setpair(ctx: *mut Ctx, argv: *mut *mut RString, argc: c_int) -> c_int {
    let Some(api) = API.get() else {
        return ERR;
    };
    unsafe {
        if argc != 4 {
            return (api.wrong_arity)(ctx);
        }
        let arg = |i: usize| *argv.add(i);
        let reply = (api.call)(
            ctx,
            c"MSET".as_ptr(),
            c"ssss".as_ptr(),
            arg(1),
            arg(3),
            arg(2),
            arg(3),
        );
        if reply.is_null() {
            return (api.reply_with_error)(ctx, c"ERR MSET failed".as_ptr());
        }
        (api.free_call_reply)(reply);
        (api.replicate_verbatim)(ctx);
        (api.reply_with_simple_string)(ctx, c"OK".as_ptr())
    }
}

/// Called by redis-server at `--loadmodule`.
///
/// # Safety
/// Only redis-server calls this, with its own context.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut Ctx,
    _argv: *mut *mut RString,
    _argc: c_int,
) -> c_int {
    let Some(api) = (unsafe { init(ctx) }) else {
        return ERR;
    };
    unsafe {
        (api.set_module_attribs)(ctx, c"rbtest".as_ptr(), 1, APIVER_1);
        if (api.create_command)(
            ctx,
            c"rbtest.setpair".as_ptr(),
            setpair,
            c"write deny-oom".as_ptr(),
            1,
            2,
            1,
        ) != OK
        {
            return ERR;
        }
    }
    OK
}
