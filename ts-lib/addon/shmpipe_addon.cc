// shmpipe native addon: the thin layer between the TypeScript client (ts-lib/src) and the
// kernel. It does only what JavaScript cannot do in Node 20:
//   - connect(): the control-socket handshake, because receiving SCM_RIGHTS file descriptors
//     needs recvmsg(); runs on the libuv thread pool so the JS thread never blocks;
//   - map(): mmap a segment fd and expose it as an external ArrayBuffer (zero copy);
//   - watch()/unwatch()/watchRef(): a uv_poll readable watcher on the cq_doorbell eventfd, so the
//     agent sleeps by returning to the event loop (SPEC §6: JS cannot Atomics.wait on this
//     memory), and whether that watcher keeps the loop alive (client.unref());
//   - ring(): write 1 to an eventfd (the sq_doorbell);
//   - close(): close an fd;
//   - setTimes(): utimensat/futimens with nanoseconds, for restore (libuv's utimes takes a
//     double and truncates to microseconds, and Node turns negative times into "now").
// The rings themselves live in JS (ts-lib/src/ring.ts) using Atomics on the mapped memory:
// a Node-API call costs more than the plain stores it would replace (ts-lib/README.md).
//
// Per environment (the main thread, each worker_thread) the addon remembers the doorbell
// watchers it started and the session fds it handed to JS and JS has not closed yet; an env
// cleanup hook stops and closes them when that environment ends, so a worker that ends with a
// client still open (terminate(), process.exit() in the worker, an uncaught error) releases its
// poll handle and fds. The mapping needs nothing more: it is an external buffer, which Node
// finalizes (munmap) when the environment ends.
//
// atomicsAdder()/atomicsJoin(): a test-only probe (test/client-atomics.test.js) that adds to a word of an
// external ArrayBuffer from a native thread, so a test can pin that Atomics on such a buffer
// are real atomics against a native peer, as the JS rings assume.
//
// Every argument is validated by the JS caller (ts-lib/src/native.ts) before it gets here; the
// checks below are only a last line against crashes. Failures are thrown (or rejected) as JS
// Errors with `code` (an errno name such as "ECONNREFUSED", or "EOF"/"EPROTO"), `errno` and
// `syscall`; ts-lib/src/errors.ts maps them to ShmpipeError codes.

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

// ---- libuv, declared by hand ---------------------------------------------------------------
// node-api-headers ships no uv.h and the build must not download Node's headers, so the few
// libuv 1.x symbols used here are declared opaquely. They are exported by the node binary and
// part of libuv's stable 1.x ABI: handle memory is sized with uv_handle_size() and user data
// goes through uv_handle_set_data/get_data, so no struct layout is assumed. The two enum values
// are fixed by UV_HANDLE_TYPE_MAP (POLL is the 8th entry after UNKNOWN = 0) and uv_poll_event.
// fsops.cc: the *at() file-system calls, registered below as `fs`.
namespace shmpipe_fsops {
Napi::Object Exports(Napi::Env env);
}

extern "C" {
typedef struct uv_loop_s uv_loop_t;
typedef struct uv_handle_s uv_handle_t;
typedef struct uv_poll_s uv_poll_t;
typedef void (*uv_poll_cb)(uv_poll_t* handle, int status, int events);
typedef void (*uv_close_cb)(uv_handle_t* handle);
size_t uv_handle_size(int type);
int uv_poll_init(uv_loop_t* loop, uv_poll_t* handle, int fd);
int uv_poll_start(uv_poll_t* handle, int events, uv_poll_cb cb);
int uv_poll_stop(uv_poll_t* handle);
void uv_close(uv_handle_t* handle, uv_close_cb close_cb);
void uv_ref(uv_handle_t* handle);
void uv_unref(uv_handle_t* handle);
void uv_handle_set_data(uv_handle_t* handle, void* data);
void* uv_handle_get_data(const uv_handle_t* handle);
const char* uv_err_name(int err);
}
namespace {
constexpr int kUvPoll = 8;      // UV_POLL
constexpr int kUvReadable = 1;  // UV_READABLE

constexpr size_t kPageSize = 4096;           // SPEC §2 PAGE_SIZE
constexpr uint32_t kMaxFrame = 64 * 1024;    // SPEC §10: frames are at most 64 KiB
constexpr int kWelcomeFds = 3;               // [segment_fd, sq_doorbell, cq_doorbell]
static_assert(sizeof(uint64_t) == 8, "eventfd counters are 8 bytes");

// ---- errors ---------------------------------------------------------------------------------

Napi::Error MakeError(Napi::Env env, const std::string& code, int err, const char* syscall,
                      const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  if (err != 0) e.Set("errno", Napi::Number::New(env, -err));
  if (syscall != nullptr) e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall) {
  return MakeError(env, uv_err_name(-err), err, syscall,
                   std::string(syscall) + " failed: " + std::strerror(err));
}

// Throws and returns an undefined value (exceptions are disabled: the caller returns it).
Napi::Value Throw(const Napi::Error& e) {
  e.ThrowAsJavaScriptException();
  return e.Env().Undefined();
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  int32_t v = info[i].As<Napi::Number>().Int32Value();
  if (v < 0) return false;
  *fd = v;
  return true;
}

Napi::Value BadArgs(const Napi::CallbackInfo& info, const char* what) {
  return Throw(MakeError(info.Env(), "EINVAL", 0, nullptr, std::string("bad arguments: ") + what));
}

// ---- per-environment resources ----------------------------------------------------------------

struct Watcher;

// What this environment (thread) still has open, released when it ends (CleanupEnv). The
// addon's instance data in that env, but owned here, not by Node-API: it must outlive the env's
// Node-API state until the last poll handle has finished closing.
struct EnvState {
  std::unordered_set<Watcher*> watchers;  // live: started, not stopped
  std::unordered_set<int> fds;            // handed to JS by connect(), not yet closed by close()
  int closing = 0;                        // polls uv_close()d whose close callback has not run
  bool ending = false;                    // CleanupEnv ran: delete when `closing` reaches 0
  napi_async_cleanup_hook_handle hook = nullptr;
};

EnvState* StateOf(Napi::Env env) { return env.GetInstanceData<EnvState>(); }

// The env is ending and no close callback is outstanding: let Node go on. After this nothing of
// the addon runs in this env any more, so Node may unload it (a worker's addon is dlclose()d).
void FinishCleanup(EnvState* state) {
  if (!state->ending || state->closing > 0) return;
  napi_async_cleanup_hook_handle hook = state->hook;
  delete state;
  napi_remove_async_cleanup_hook(hook);
}

// ---- connect(socketPath, helloFrame, timeoutMs) -> Promise<{sock, reply, fds}> ---------------
// Blocking socket calls bounded by SO_SNDTIMEO/SO_RCVTIMEO, on the thread pool.

class ConnectWorker : public Napi::AsyncWorker {
 public:
  ConnectWorker(Napi::Env env, std::string path, std::string frame, int timeout_ms)
      : Napi::AsyncWorker(env, "shmpipe.connect"),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        frame_(std::move(frame)),
        timeout_ms_(timeout_ms) {}

  ~ConnectWorker() override {
    // Anything not handed to JS (a failure half-way through) is closed here.
    if (sock_ >= 0) ::close(sock_);
    for (int fd : fds_) ::close(fd);
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    sock_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock_ < 0) return Fail(errno, "socket");
    timeval tv{};
    tv.tv_sec = timeout_ms_ / 1000;
    tv.tv_usec = (timeout_ms_ % 1000) * 1000;
    if (::setsockopt(sock_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) return Fail(errno, "setsockopt");
    if (::setsockopt(sock_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return Fail(errno, "setsockopt");

    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof addr.sun_path) return Fail(ENAMETOOLONG, "connect");
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    int rc;
    do {
      rc = ::connect(sock_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return Fail(errno, "connect");

    if (!SendAll(frame_.data(), frame_.size())) return;

    // The reply frame: exactly 4 length bytes, then exactly `len` JSON bytes, so nothing that
    // follows it (a later `draining` frame) is consumed here. The fds ride on the first byte.
    uint8_t lenbuf[4];
    if (!RecvExact(lenbuf, sizeof lenbuf)) return;
    uint32_t len = uint32_t(lenbuf[0]) | uint32_t(lenbuf[1]) << 8 | uint32_t(lenbuf[2]) << 16 |
                   uint32_t(lenbuf[3]) << 24;
    if (len == 0 || len > kMaxFrame) return Fail(EPROTO, "recvmsg", "EPROTO", "reply frame length out of range");
    reply_.resize(len);
    if (!RecvExact(reply_.data(), len)) return;

    // Leave the socket blocking-free for Node's net.Socket, which adopts it afterwards.
    timeval zero{};
    ::setsockopt(sock_, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
    ::setsockopt(sock_, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (!code_.empty()) {
      deferred_.Reject(MakeError(env, code_, err_, syscall_, message_).Value());
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("sock", Napi::Number::New(env, sock_));
    out.Set("reply", Napi::String::New(env, reinterpret_cast<const char*>(reply_.data()), reply_.size()));
    Napi::Array fds = Napi::Array::New(env, fds_.size());
    EnvState* state = StateOf(env);
    for (size_t i = 0; i < fds_.size(); i++) {
      fds.Set(uint32_t(i), Napi::Number::New(env, fds_[i]));
      state->fds.insert(fds_[i]);  // closed by the cleanup hook unless JS closes it first
    }
    out.Set("fds", fds);
    sock_ = -1;  // ownership moves to JS
    fds_.clear();
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  void Fail(int err, const char* syscall, const char* code = nullptr, const char* message = nullptr) {
    err_ = err;
    syscall_ = syscall;
    code_ = code != nullptr ? code : uv_err_name(-err);
    message_ = message != nullptr ? std::string(syscall) + ": " + message
                                  : std::string(syscall) + " failed: " + std::strerror(err);
  }

  bool SendAll(const char* p, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(sock_, p, n, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        Fail(errno, "send");
        return false;
      }
      p += w;
      n -= size_t(w);
    }
    return true;
  }

  bool RecvExact(uint8_t* p, size_t n) {
    while (n > 0) {
      iovec iov{p, n};
      alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kWelcomeFds)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = ctrl;
      msg.msg_controllen = sizeof ctrl;
      ssize_t r = ::recvmsg(sock_, &msg, MSG_CMSG_CLOEXEC);
      if (r < 0) {
        if (errno == EINTR) continue;
        Fail(errno, "recvmsg");
        return false;
      }
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
          fds_.push_back(fd);
        }
      }
      if (msg.msg_flags & MSG_CTRUNC) {
        Fail(EPROTO, "recvmsg", "EPROTO", "more file descriptors than expected");
        return false;
      }
      if (r == 0) {
        Fail(0, "recvmsg", "EOF", "the sidecar closed the connection during the handshake");
        return false;
      }
      p += r;
      n -= size_t(r);
    }
    return true;
  }

  Napi::Promise::Deferred deferred_;
  std::string path_;
  std::string frame_;
  int timeout_ms_;
  int sock_ = -1;
  std::vector<int> fds_;
  std::vector<uint8_t> reply_;
  std::string code_;
  std::string message_;
  const char* syscall_ = nullptr;
  int err_ = 0;
};

Napi::Value Connect(const Napi::CallbackInfo& info) {
  if (info.Length() < 3 || !info[0].IsString() || !info[1].IsBuffer() || !info[2].IsNumber())
    return BadArgs(info, "connect(path: string, frame: Buffer, timeoutMs: number)");
  Napi::Buffer<char> frame = info[1].As<Napi::Buffer<char>>();
  int timeout = info[2].As<Napi::Number>().Int32Value();
  if (timeout <= 0) return BadArgs(info, "timeoutMs must be positive");
  auto* w = new ConnectWorker(info.Env(), info[0].As<Napi::String>().Utf8Value(),
                              std::string(frame.Data(), frame.Length()), timeout);
  Napi::Promise p = w->Promise();
  w->Queue();  // the worker deletes itself after OnOK/OnError
  return p;
}

// ---- map(fd, size, populate?) -> ArrayBuffer --------------------------------------------------
// MAP_SHARED. The first `populate` bytes (the header and the rings: default all of it) are
// faulted in here, not on the hot path (LIMITS.md); the slots beyond are not: a slot's pages are
// mapped when first used, so memory follows the slots actually cycled through (the sidecar gives
// idle slots' pages back, SPEC §12) instead of the whole pool (issue #15: MAP_POPULATE of a
// 192 MiB pool made every page resident, ~0.5 s and ~190 MB of PSS per CLI session).
// The finalizer munmaps when the last JS reference (the client, a Slot's Buffer) is collected,
// so JS can never touch unmapped memory.

void Unmap(Napi::Env /*env*/, void* data, size_t* size) {
  ::munmap(data, *size);
  delete size;
}

Napi::Value Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd) || info.Length() < 2 || !info[1].IsNumber())
    return BadArgs(info, "map(fd: number, size: number, populate?: number)");
  double dsize = info[1].As<Napi::Number>().DoubleValue();
  if (!(dsize > 0) || dsize > 9007199254740991.0 || static_cast<double>(static_cast<size_t>(dsize)) != dsize ||
      static_cast<size_t>(dsize) % kPageSize != 0)
    return BadArgs(info, "size must be a positive multiple of 4096");
  size_t size = static_cast<size_t>(dsize);
  size_t populate = size;
  if (info.Length() >= 3 && !info[2].IsUndefined()) {
    if (!info[2].IsNumber()) return BadArgs(info, "populate must be a number");
    double dp = info[2].As<Napi::Number>().DoubleValue();
    if (!(dp >= 0) || dp > dsize) return BadArgs(info, "populate must be in 0..size");
    populate = (static_cast<size_t>(dp) + kPageSize - 1) / kPageSize * kPageSize;
    if (populate > size) populate = size;
  }
  // A mapping longer than the file would SIGBUS on access past its end: refuse it.
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Throw(ErrnoError(env, errno, "fstat"));
  if (st.st_size < 0 || static_cast<uint64_t>(st.st_size) < size)
    return Throw(MakeError(env, "EPROTO", 0, "fstat", "segment file is smaller than segment_size"));
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | (populate == size ? MAP_POPULATE : 0), fd, 0);
  if (p == MAP_FAILED) return Throw(ErrnoError(env, errno, "mmap"));
  if (reinterpret_cast<uintptr_t>(p) % kPageSize != 0) {
    ::munmap(p, size);
    return Throw(MakeError(env, "EPROTO", 0, "mmap", "mapping is not page aligned"));
  }
  if (populate > 0 && populate < size) {
    // MADV_POPULATE_READ (Linux 5.14) maps the pages without touching them; older kernels
    // refuse it, and then a read of each page does the same.
    constexpr int kMadvPopulateRead = 22;
    if (::madvise(p, populate, kMadvPopulateRead) != 0) {
      for (size_t off = 0; off < populate; off += kPageSize) (void)*(static_cast<volatile const char*>(p) + off);
    }
  }
  return Napi::ArrayBuffer::New(env, p, size, Unmap, new size_t(size));
}

// ---- watch(fd, callback) -> handle; unwatch(handle) --------------------------------------------
// uv_poll on the cq_doorbell eventfd. On readable: read the 8-byte counter (resetting it; the fd
// is non-blocking, uv_poll_init sets that), then call back into JS through MakeCallback so the
// microtask queue (Promise continuations) runs right after. No thread, never blocks.

// Owned jointly by the uv handle (until its close callback) and the JS External (until it is
// garbage collected): whichever lets go last frees it, so a late or repeated unwatch() is safe.
struct Watcher {
  int fd;
  uv_poll_t* poll;
  Napi::FunctionReference callback;
  Napi::AsyncContext* context;
  EnvState* state;  // valid until its close callback ran
  bool closing = false;
  int owners = 2;
};

void Release(Watcher* w) {
  if (--w->owners == 0) delete w;
}

void OnPollClosed(uv_handle_t* h) {
  auto* w = static_cast<Watcher*>(uv_handle_get_data(h));
  EnvState* state = w->state;
  ::operator delete(h);
  w->poll = nullptr;
  Release(w);
  state->closing--;
  FinishCleanup(state);
}

void StopWatcher(Watcher* w) {
  if (w->closing) return;
  w->closing = true;
  w->state->watchers.erase(w);
  w->state->closing++;  // the env must not end before OnPollClosed ran: it is code of this addon
  uv_poll_stop(w->poll);
  delete w->context;
  w->context = nullptr;
  w->callback.Reset();
  uv_close(reinterpret_cast<uv_handle_t*>(w->poll), OnPollClosed);
}

void FinalizeWatcher(Napi::Env /*env*/, Watcher* w) {
  StopWatcher(w);  // dropped without unwatch(): stop it rather than leak a live poll
  Release(w);
}

// Calls the watcher's JS callback with (err | null). Written against the C API with every status
// checked, because it runs straight from libuv, outside any JS call: also while a worker is being
// terminated, when nothing may run JS and node-addon-api's wrappers would turn the refusal into a
// fatal error. An exception the callback throws is reported as uncaught (like one thrown by an
// event listener) instead of staying pending in the env and failing every later Node-API call.
void CallWatcher(Watcher* w, int err, const char* syscall) {
  napi_env env = w->callback.Env();
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value arg = nullptr;
  napi_value fn = nullptr;
  napi_value global = nullptr;
  bool ok = napi_get_reference_value(env, w->callback, &fn) == napi_ok && fn != nullptr &&
            napi_get_global(env, &global) == napi_ok;
  if (ok && err == 0) {
    ok = napi_get_null(env, &arg) == napi_ok;
  } else if (ok) {
    std::string code = uv_err_name(-err);
    std::string message = std::string(syscall) + " failed: " + std::strerror(err);
    napi_value c = nullptr;
    napi_value m = nullptr;
    napi_value n = nullptr;
    napi_value sc = nullptr;
    ok = napi_create_string_utf8(env, code.c_str(), code.size(), &c) == napi_ok &&
         napi_create_string_utf8(env, message.c_str(), message.size(), &m) == napi_ok &&
         napi_create_error(env, c, m, &arg) == napi_ok && napi_create_int32(env, -err, &n) == napi_ok &&
         napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc) == napi_ok &&
         napi_set_named_property(env, arg, "errno", n) == napi_ok &&
         napi_set_named_property(env, arg, "syscall", sc) == napi_ok;
  }
  if (ok) {
    napi_value result;
    if (napi_make_callback(env, *w->context, global, fn, 1, &arg, &result) == napi_pending_exception) {
      napi_value e;
      napi_valuetype t;
      // A terminating worker's "exception" is not an object: nothing to report then.
      if (napi_get_and_clear_last_exception(env, &e) == napi_ok && napi_typeof(env, e, &t) == napi_ok && t == napi_object) {
        napi_fatal_exception(env, e);
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

void OnPoll(uv_poll_t* handle, int status, int /*events*/) {
  auto* w = static_cast<Watcher*>(uv_handle_get_data(reinterpret_cast<uv_handle_t*>(handle)));
  if (w->closing) return;
  if (status < 0) return CallWatcher(w, -status, "uv_poll");
  uint64_t counter;
  ssize_t r;
  do {
    r = ::read(w->fd, &counter, sizeof counter);
  } while (r < 0 && errno == EINTR);
  // EAGAIN: a spurious wakeup (someone else reset the counter); JS re-checks the rings anyway.
  if (r < 0 && errno != EAGAIN) return CallWatcher(w, errno, "read");
  CallWatcher(w, 0, nullptr);
}

Napi::Value Watch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  if (!ArgFd(info, 0, &fd) || info.Length() < 2 || !info[1].IsFunction())
    return BadArgs(info, "watch(fd: number, callback: Function)");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, reinterpret_cast<struct uv_loop_s**>(&loop)) != napi_ok || loop == nullptr)
    return Throw(MakeError(env, "EINVAL", 0, nullptr, "no event loop"));
  auto* poll = static_cast<uv_poll_t*>(::operator new(uv_handle_size(kUvPoll)));
  int rc = uv_poll_init(loop, poll, fd);
  if (rc != 0) {
    ::operator delete(poll);
    return Throw(MakeError(env, uv_err_name(rc), -rc, "uv_poll_init", "cannot watch the doorbell"));
  }
  EnvState* state = StateOf(env);
  auto* w = new Watcher{fd, poll, Napi::Persistent(info[1].As<Napi::Function>()),
                        new Napi::AsyncContext(env, "shmpipe.doorbell"), state};
  state->watchers.insert(w);
  uv_handle_set_data(reinterpret_cast<uv_handle_t*>(poll), w);
  rc = uv_poll_start(poll, kUvReadable, OnPoll);
  if (rc != 0) {
    w->owners = 1;  // no External will exist
    StopWatcher(w);
    return Throw(MakeError(env, uv_err_name(rc), -rc, "uv_poll_start", "cannot watch the doorbell"));
  }
  return Napi::External<Watcher>::New(env, w, FinalizeWatcher);
}

Napi::Value Unwatch(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsExternal()) return BadArgs(info, "unwatch(handle)");
  StopWatcher(info[0].As<Napi::External<Watcher>>().Data());  // idempotent
  return info.Env().Undefined();
}

// watchRef(handle, ref): whether the watcher keeps the event loop alive (uv_ref/uv_unref).
Napi::Value WatchRef(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsExternal() || !info[1].IsBoolean()) return BadArgs(info, "watchRef(handle, ref: boolean)");
  Watcher* w = info[0].As<Napi::External<Watcher>>().Data();
  if (!w->closing) {
    auto* h = reinterpret_cast<uv_handle_t*>(w->poll);
    if (info[1].As<Napi::Boolean>().Value()) uv_ref(h);
    else uv_unref(h);
  }
  return info.Env().Undefined();
}

// ---- ring(fd): add 1 to an eventfd -----------------------------------------------------------

Napi::Value Ring(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return BadArgs(info, "ring(fd: number)");
  const uint64_t one = 1;
  ssize_t w;
  do {
    w = ::write(fd, &one, sizeof one);
  } while (w < 0 && errno == EINTR);
  // EAGAIN: the counter is saturated, so the peer is certainly going to wake up anyway.
  if (w < 0 && errno != EAGAIN) return Throw(ErrnoError(info.Env(), errno, "write"));
  return info.Env().Undefined();
}

// ---- close(fd) -----------------------------------------------------------------------------

Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd;
  if (!ArgFd(info, 0, &fd)) return BadArgs(info, "close(fd: number)");
  StateOf(info.Env())->fds.erase(fd);
  if (::close(fd) != 0 && errno != EINTR) return Throw(ErrnoError(info.Env(), errno, "close"));
  return info.Env().Undefined();
}

// ---- setTimes(target, seconds, nanoseconds, noFollow) ----------------------------------------
// Sets atime and mtime of an fd (futimens) or of a path (utimensat; a Buffer, names need not be
// UTF-8; noFollow: the link itself). Synchronous: one syscall, cheaper than a thread-pool hop.

Napi::Value SetTimes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 4 || !(info[0].IsNumber() || info[0].IsBuffer()) || !info[1].IsNumber() || !info[2].IsNumber() ||
      !info[3].IsBoolean()) {
    return BadArgs(info, "setTimes(target: number | Buffer, seconds: number, nanoseconds: number, noFollow: boolean)");
  }
  struct timespec ts[2];
  ts[0].tv_sec = static_cast<time_t>(info[1].As<Napi::Number>().Int64Value());
  ts[0].tv_nsec = static_cast<long>(info[2].As<Napi::Number>().Int64Value());
  if (ts[0].tv_nsec < 0 || ts[0].tv_nsec > 999999999) return BadArgs(info, "setTimes: nanoseconds out of range");
  ts[1] = ts[0];
  if (info[0].IsNumber()) {
    int fd;
    if (!ArgFd(info, 0, &fd)) return BadArgs(info, "setTimes: bad fd");
    if (::futimens(fd, ts) != 0) return Throw(ErrnoError(env, errno, "futimens"));
    return env.Undefined();
  }
  Napi::Buffer<char> b = info[0].As<Napi::Buffer<char>>();
  std::string path(b.Data(), b.Length());
  if (path.empty() || path.find('\0') != std::string::npos) return BadArgs(info, "setTimes: bad path");
  int flags = info[3].As<Napi::Boolean>().Value() ? AT_SYMLINK_NOFOLLOW : 0;
  if (::utimensat(AT_FDCWD, path.c_str(), ts, flags) != 0) return Throw(ErrnoError(env, errno, "utimensat"));
  return env.Undefined();
}

// ---- noop(): an empty call, only to measure the Node-API call cost (perf/) --------------------

Napi::Value Noop(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

// ---- atomicsAdder(buffer, byteOffset, width, stopOffset) -> handle; atomicsJoin(handle): test-only
// Starts a native thread that adds 1 to the naturally aligned u32 (width 4) or u64 (width 8) at
// `byteOffset` of an ArrayBuffer (the external one a segment is mapped as), with sequentially
// consistent atomic read-modify-writes, from the moment the word is non-zero (the JS side starts
// both sides at once by storing 1) until the u32 at `stopOffset` is non-zero. atomicsJoin() waits
// for it and returns [adds, interleaved]: how many it made, and how many of them found the word
// changed by someone else since its own previous add (so a test knows both sides really ran at
// once). The caller keeps the buffer alive, and sets the stop word, before atomicsJoin().

struct Adder {
  std::thread thread;
  uint64_t adds = 0;
  uint64_t interleaved = 0;
};

template <typename T>
void AddLoop(Adder* a, T* word, uint32_t* stop) {
  while (__atomic_load_n(word, __ATOMIC_SEQ_CST) == 0) std::this_thread::yield();
  T expected = __atomic_load_n(word, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(stop, __ATOMIC_SEQ_CST) == 0) {
    for (int i = 0; i < 1024; i++) {
      T before = __atomic_fetch_add(word, T(1), __ATOMIC_SEQ_CST);
      if (before != expected) a->interleaved++;
      expected = T(before + 1);
    }
    a->adds += 1024;
  }
}

void FinalizeAdder(Napi::Env /*env*/, Adder* a) {
  if (a->thread.joinable()) a->thread.join();
  delete a;
}

Napi::Value AtomicsAdder(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 4 || !info[0].IsArrayBuffer() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber())
    return BadArgs(info, "atomicsAdder(buffer: ArrayBuffer, byteOffset: number, width: 4 | 8, stopOffset: number)");
  Napi::ArrayBuffer ab = info[0].As<Napi::ArrayBuffer>();
  int64_t offset = info[1].As<Napi::Number>().Int64Value();
  int64_t width = info[2].As<Napi::Number>().Int64Value();
  int64_t stop = info[3].As<Napi::Number>().Int64Value();
  uint64_t size = ab.ByteLength();
  if ((width != 4 && width != 8) || offset < 0 || offset % width != 0 || uint64_t(offset + width) > size || stop < 0 || stop % 4 != 0 ||
      uint64_t(stop + 4) > size || (stop + 4 > offset && offset + width > stop))
    return BadArgs(info, "atomicsAdder: two aligned, separate words inside the buffer");
  uint8_t* base = static_cast<uint8_t*>(ab.Data());
  auto* a = new Adder();
  auto* halt = reinterpret_cast<uint32_t*>(base + stop);
  if (width == 4) a->thread = std::thread([a, base, offset, halt] { AddLoop(a, reinterpret_cast<uint32_t*>(base + offset), halt); });
  else a->thread = std::thread([a, base, offset, halt] { AddLoop(a, reinterpret_cast<uint64_t*>(base + offset), halt); });
  return Napi::External<Adder>::New(env, a, FinalizeAdder);
}

Napi::Value AtomicsJoin(const Napi::CallbackInfo& info) {
  if (info.Length() != 1 || !info[0].IsExternal()) return BadArgs(info, "atomicsJoin(handle)");
  Adder* a = info[0].As<Napi::External<Adder>>().Data();
  if (a->thread.joinable()) a->thread.join();
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(uint32_t(0), Napi::Number::New(info.Env(), double(a->adds)));
  out.Set(uint32_t(1), Napi::Number::New(info.Env(), double(a->interleaved)));
  return out;
}

// ---- the environment ends ------------------------------------------------------------------------

// An async cleanup hook: Node keeps running the env's loop until FinishCleanup removes it, so the
// close callbacks of the polls stopped here (and of any that JS stopped just before) still run
// while the addon is loaded.
void CleanupEnv(napi_async_cleanup_hook_handle hook, void* arg) {
  auto* state = static_cast<EnvState*>(arg);
  state->hook = hook;
  state->ending = true;
  // Watchers first: a poll must not outlive the fd it watches.
  std::vector<Watcher*> watchers(state->watchers.begin(), state->watchers.end());
  for (Watcher* w : watchers) StopWatcher(w);
  for (int fd : state->fds) ::close(fd);
  state->fds.clear();
  FinishCleanup(state);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new EnvState();
  // No finalizer: CleanupEnv/FinishCleanup delete it, after the env's last close callback.
  if (napi_set_instance_data(env, state, nullptr, nullptr) != napi_ok ||
      napi_add_async_cleanup_hook(env, CleanupEnv, state, nullptr) != napi_ok) {
    delete state;
    Napi::Error::New(env, "shmpipe addon: cannot register its env cleanup").ThrowAsJavaScriptException();
    return exports;
  }
  exports.Set("connect", Napi::Function::New(env, Connect, "connect"));
  exports.Set("map", Napi::Function::New(env, Map, "map"));
  exports.Set("watch", Napi::Function::New(env, Watch, "watch"));
  exports.Set("unwatch", Napi::Function::New(env, Unwatch, "unwatch"));
  exports.Set("watchRef", Napi::Function::New(env, WatchRef, "watchRef"));
  exports.Set("ring", Napi::Function::New(env, Ring, "ring"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("setTimes", Napi::Function::New(env, SetTimes, "setTimes"));
  exports.Set("noop", Napi::Function::New(env, Noop, "noop"));
  exports.Set("atomicsAdder", Napi::Function::New(env, AtomicsAdder, "atomicsAdder"));
  exports.Set("atomicsJoin", Napi::Function::New(env, AtomicsJoin, "atomicsJoin"));
  exports.Set("fs", shmpipe_fsops::Exports(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(shmpipe_addon, Init)
