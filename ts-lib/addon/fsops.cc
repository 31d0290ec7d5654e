// shmpipe native addon, file-system part: the *at() system calls restore and backup need and
// Node 20 does not offer (node:fs has no openat, mkdirat, symlinkat, mknodat, linkat, renameat,
// unlinkat, fstatat, fchownat, utimensat, no xattrs and no SEEK_DATA/SEEK_HOLE). Restore does
// every operation relative to a directory fd it opened with O_DIRECTORY|O_NOFOLLOW, so a
// symlink planted in the target (or swapped in during the restore) is never followed
// (ts-lib/src/backup/restore-fs.ts); backup reads xattrs from the fd it read the file through.
//
// Thin on purpose: one function per system call, synchronous (one syscall costs less than a
// thread-pool round trip; restore calls these for every small file), no policy. The JS side
// (ts-lib/src/backup/fsops.ts) validates every argument first; the checks here are a last line
// against crashes. Failures throw an Error shaped like node:fs's: `code` (errno name, e.g.
// "ELOOP"), `errno` (negative), `syscall`, and a message naming the syscall and the name.
// Registered as `fs` on the addon's exports by shmpipe_addon.cc's Init.

#include <napi.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>

extern "C" const char* uv_err_name(int err);

namespace shmpipe_fsops {
namespace {

// The largest xattr value Linux stores (XATTR_SIZE_MAX) and list (XATTR_LIST_MAX).
constexpr size_t kXattrMax = 65536;

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const std::string& name) {
  std::string msg = std::string(uv_err_name(-err)) + ": " + std::strerror(err) + ", " + syscall;
  if (!name.empty()) msg += " '" + name + "'";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

Napi::Value Throw(const Napi::Error& e) {
  e.ThrowAsJavaScriptException();
  return e.Env().Undefined();
}

Napi::Value Bad(const Napi::CallbackInfo& info, const char* what) {
  Napi::Error e = Napi::Error::New(info.Env(), std::string("bad arguments: ") + what);
  e.Set("code", Napi::String::New(info.Env(), "EINVAL"));
  return Throw(e);
}

// A directory fd (AT_FDCWD allowed) at argument i.
bool DirFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  int32_t v = info[i].As<Napi::Number>().Int32Value();
  if (v < 0 && v != AT_FDCWD) return false;
  *fd = v;
  return true;
}

bool Int(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) return false;
  *out = info[i].As<Napi::Number>().Int64Value();
  return true;
}

// A name or path at argument i: a Buffer without NUL bytes. `allowEmpty`: "" (for AT_EMPTY_PATH).
bool Name(const Napi::CallbackInfo& info, size_t i, std::string* out, bool allowEmpty = false) {
  if (info.Length() <= i || !info[i].IsBuffer()) return false;
  Napi::Buffer<char> b = info[i].As<Napi::Buffer<char>>();
  out->assign(b.Data(), b.Length());
  if (out->find('\0') != std::string::npos) return false;
  return allowEmpty || !out->empty();
}

Napi::Value Big(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }
Napi::Value BigSigned(Napi::Env env, int64_t v) { return Napi::BigInt::New(env, v); }

Napi::Value StatObject(Napi::Env env, const struct stat& st) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("mode", Napi::Number::New(env, st.st_mode));
  o.Set("uid", Napi::Number::New(env, st.st_uid));
  o.Set("gid", Napi::Number::New(env, st.st_gid));
  o.Set("nlink", Napi::Number::New(env, static_cast<double>(st.st_nlink)));
  o.Set("size", Big(env, static_cast<uint64_t>(st.st_size)));
  o.Set("blocks", Big(env, static_cast<uint64_t>(st.st_blocks)));
  o.Set("ino", Big(env, st.st_ino));
  o.Set("dev", Big(env, st.st_dev));
  o.Set("rdev", Big(env, st.st_rdev));
  o.Set("mtimeNs", BigSigned(env, int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec));
  o.Set("ctimeNs", BigSigned(env, int64_t(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec));
  return o;
}

// ---- openat(dirfd, name, flags, mode) -> fd (O_CLOEXEC always) ------------------------------
Napi::Value OpenAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t flags, mode;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name) || !Int(info, 2, &flags) || !Int(info, 3, &mode))
    return Bad(info, "openat(dirfd, name: Buffer, flags, mode)");
  int fd;
  do {
    fd = ::openat(dirfd, name.c_str(), int(flags) | O_CLOEXEC, mode_t(mode));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return Throw(ErrnoError(info.Env(), errno, "openat", name));
  return Napi::Number::New(info.Env(), fd);
}

// ---- mkdirat(dirfd, name, mode) --------------------------------------------------------------
Napi::Value MkdirAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t mode;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name) || !Int(info, 2, &mode)) return Bad(info, "mkdirat(dirfd, name, mode)");
  if (::mkdirat(dirfd, name.c_str(), mode_t(mode)) != 0) return Throw(ErrnoError(info.Env(), errno, "mkdirat", name));
  return info.Env().Undefined();
}

// ---- symlinkat(target, dirfd, name) ----------------------------------------------------------
Napi::Value SymlinkAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string target, name;
  if (!Name(info, 0, &target) || !DirFd(info, 1, &dirfd) || !Name(info, 2, &name)) return Bad(info, "symlinkat(target, dirfd, name)");
  if (::symlinkat(target.c_str(), dirfd, name.c_str()) != 0) return Throw(ErrnoError(info.Env(), errno, "symlinkat", name));
  return info.Env().Undefined();
}

// ---- mknodat(dirfd, name, mode, rdev: bigint) ------------------------------------------------
Napi::Value MknodAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t mode;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name) || !Int(info, 2, &mode) || info.Length() < 4 || !info[3].IsBigInt())
    return Bad(info, "mknodat(dirfd, name, mode, rdev: bigint)");
  bool lossless = false;
  uint64_t rdev = info[3].As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) return Bad(info, "mknodat: rdev out of range");
  if (::mknodat(dirfd, name.c_str(), mode_t(mode), dev_t(rdev)) != 0) return Throw(ErrnoError(info.Env(), errno, "mknodat", name));
  return info.Env().Undefined();
}

// ---- linkat(olddirfd, oldname, newdirfd, newname): never follows a symlink -------------------
Napi::Value LinkAt(const Napi::CallbackInfo& info) {
  int olddir, newdir;
  std::string oldname, newname;
  if (!DirFd(info, 0, &olddir) || !Name(info, 1, &oldname) || !DirFd(info, 2, &newdir) || !Name(info, 3, &newname))
    return Bad(info, "linkat(olddirfd, oldname, newdirfd, newname)");
  if (::linkat(olddir, oldname.c_str(), newdir, newname.c_str(), 0) != 0) return Throw(ErrnoError(info.Env(), errno, "linkat", newname));
  return info.Env().Undefined();
}

// ---- renameat(olddirfd, oldname, newdirfd, newname) ------------------------------------------
Napi::Value RenameAt(const Napi::CallbackInfo& info) {
  int olddir, newdir;
  std::string oldname, newname;
  if (!DirFd(info, 0, &olddir) || !Name(info, 1, &oldname) || !DirFd(info, 2, &newdir) || !Name(info, 3, &newname))
    return Bad(info, "renameat(olddirfd, oldname, newdirfd, newname)");
  if (::renameat(olddir, oldname.c_str(), newdir, newname.c_str()) != 0) return Throw(ErrnoError(info.Env(), errno, "renameat", newname));
  return info.Env().Undefined();
}

// ---- unlinkat(dirfd, name, flags) ------------------------------------------------------------
Napi::Value UnlinkAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t flags;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name) || !Int(info, 2, &flags)) return Bad(info, "unlinkat(dirfd, name, flags)");
  if (::unlinkat(dirfd, name.c_str(), int(flags)) != 0) return Throw(ErrnoError(info.Env(), errno, "unlinkat", name));
  return info.Env().Undefined();
}

// ---- fstatat(dirfd, name, flags) -> stat | null (ENOENT); an empty name: the fd itself --------
Napi::Value FstatAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t flags;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name, true) || !Int(info, 2, &flags)) return Bad(info, "fstatat(dirfd, name, flags)");
  struct stat st {};
  int f = int(flags);
  if (name.empty()) f |= AT_EMPTY_PATH;
  if (::fstatat(dirfd, name.c_str(), &st, f) != 0) {
    if (errno == ENOENT) return info.Env().Null();
    return Throw(ErrnoError(info.Env(), errno, "fstatat", name));
  }
  return StatObject(info.Env(), st);
}

// ---- fchownat(dirfd, name, uid, gid, flags); an empty name: the fd itself ---------------------
Napi::Value FchownAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t uid, gid, flags;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name, true) || !Int(info, 2, &uid) || !Int(info, 3, &gid) || !Int(info, 4, &flags))
    return Bad(info, "fchownat(dirfd, name, uid, gid, flags)");
  int f = int(flags);
  if (name.empty()) f |= AT_EMPTY_PATH;
  if (::fchownat(dirfd, name.c_str(), uid_t(uid), gid_t(gid), f) != 0) return Throw(ErrnoError(info.Env(), errno, "fchownat", name));
  return info.Env().Undefined();
}

// ---- fchmodat(dirfd, name, mode, flags): glibc implements AT_SYMLINK_NOFOLLOW (an O_PATH fd,
// EOPNOTSUPP for a symlink), so the mode of what is there now is set, never of a link's target.
Napi::Value FchmodAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t mode, flags;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name) || !Int(info, 2, &mode) || !Int(info, 3, &flags))
    return Bad(info, "fchmodat(dirfd, name, mode, flags)");
  if (::fchmodat(dirfd, name.c_str(), mode_t(mode), int(flags)) != 0) return Throw(ErrnoError(info.Env(), errno, "fchmodat", name));
  return info.Env().Undefined();
}

// ---- utimensat(dirfd, name, seconds, nanoseconds, flags): atime = mtime; empty name: futimens --
Napi::Value UtimensAt(const Napi::CallbackInfo& info) {
  int dirfd;
  std::string name;
  int64_t sec, nsec, flags;
  if (!DirFd(info, 0, &dirfd) || !Name(info, 1, &name, true) || !Int(info, 2, &sec) || !Int(info, 3, &nsec) || !Int(info, 4, &flags))
    return Bad(info, "utimensat(dirfd, name, seconds, nanoseconds, flags)");
  if (nsec < 0 || nsec > 999999999) return Bad(info, "utimensat: nanoseconds out of range");
  struct timespec ts[2];
  ts[0].tv_sec = time_t(sec);
  ts[0].tv_nsec = long(nsec);
  ts[1] = ts[0];
  int rc = name.empty() ? ::futimens(dirfd, ts) : ::utimensat(dirfd, name.c_str(), ts, int(flags));
  if (rc != 0) return Throw(ErrnoError(info.Env(), errno, name.empty() ? "futimens" : "utimensat", name));
  return info.Env().Undefined();
}

// ---- readdir(dirfd) -> Buffer[]: the names in a directory (not . and ..), read through a dup of
// the fd so the caller's fd stays open and at its position.
Napi::Value ReadDir(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int dirfd;
  if (!DirFd(info, 0, &dirfd) || dirfd < 0) return Bad(info, "readdir(dirfd)");
  int fd = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Throw(ErrnoError(env, errno, "openat", "."));
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    ::close(fd);
    return Throw(ErrnoError(env, err, "fdopendir", ""));
  }
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    dirent* de = ::readdir(d);
    if (de == nullptr) {
      if (errno != 0) {
        int err = errno;
        ::closedir(d);
        return Throw(ErrnoError(env, err, "readdir", ""));
      }
      break;
    }
    if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
    names.emplace_back(de->d_name);
  }
  ::closedir(d);
  Napi::Array out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) out.Set(uint32_t(i), Napi::Buffer<char>::Copy(env, names[i].data(), names[i].size()));
  return out;
}

// ---- extended attributes -------------------------------------------------------------------
// On an fd (f*) or on a path without following a final symlink (l*; restore reaches a symlink it
// made through /proc/self/fd/DIRFD/NAME, so no other component is followed either).

Napi::Value NameList(Napi::Env env, const std::vector<char>& buf, ssize_t n) {
  std::vector<std::string> names;
  for (ssize_t i = 0; i < n;) {
    size_t len = strnlen(buf.data() + i, size_t(n - i));
    if (len > 0) names.emplace_back(buf.data() + i, len);
    i += ssize_t(len) + 1;
  }
  Napi::Array out = Napi::Array::New(env, names.size());
  for (size_t i = 0; i < names.size(); i++) out.Set(uint32_t(i), Napi::Buffer<char>::Copy(env, names[i].data(), names[i].size()));
  return out;
}

// listxattr(target: number | Buffer) -> Buffer[]: fd → flistxattr, path → llistxattr.
Napi::Value ListXattr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  std::string path;
  bool byFd = info.Length() >= 1 && info[0].IsNumber();
  if (byFd ? !DirFd(info, 0, &fd) || fd < 0 : !Name(info, 0, &path)) return Bad(info, "listxattr(fd | path: Buffer)");
  std::vector<char> buf(4096);
  for (;;) {
    ssize_t n = byFd ? ::flistxattr(fd, buf.data(), buf.size()) : ::llistxattr(path.c_str(), buf.data(), buf.size());
    if (n >= 0) return NameList(env, buf, n);
    if (errno == ENOTSUP) return Napi::Array::New(env, 0);  // no xattrs on this file system
    if (errno != ERANGE || buf.size() >= kXattrMax) return Throw(ErrnoError(env, errno, byFd ? "flistxattr" : "llistxattr", path));
    buf.resize(kXattrMax);
  }
}

// getxattr(target: number | Buffer, name: Buffer) -> Buffer | null (ENODATA: gone meanwhile).
Napi::Value GetXattr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  std::string path, name;
  bool byFd = info.Length() >= 1 && info[0].IsNumber();
  if ((byFd ? !DirFd(info, 0, &fd) || fd < 0 : !Name(info, 0, &path)) || !Name(info, 1, &name))
    return Bad(info, "getxattr(fd | path: Buffer, name: Buffer)");
  std::vector<char> buf(1024);
  for (;;) {
    ssize_t n = byFd ? ::fgetxattr(fd, name.c_str(), buf.data(), buf.size()) : ::lgetxattr(path.c_str(), name.c_str(), buf.data(), buf.size());
    if (n >= 0) return Napi::Buffer<char>::Copy(env, buf.data(), size_t(n));
    if (errno == ENODATA) return env.Null();
    if (errno != ERANGE || buf.size() >= kXattrMax) return Throw(ErrnoError(env, errno, byFd ? "fgetxattr" : "lgetxattr", name));
    buf.resize(kXattrMax);
  }
}

// setxattr(target: number | Buffer, name: Buffer, value: Buffer).
Napi::Value SetXattr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = -1;
  std::string path, name;
  bool byFd = info.Length() >= 1 && info[0].IsNumber();
  if ((byFd ? !DirFd(info, 0, &fd) || fd < 0 : !Name(info, 0, &path)) || !Name(info, 1, &name) || info.Length() < 3 || !info[2].IsBuffer())
    return Bad(info, "setxattr(fd | path: Buffer, name: Buffer, value: Buffer)");
  Napi::Buffer<char> v = info[2].As<Napi::Buffer<char>>();
  int rc = byFd ? ::fsetxattr(fd, name.c_str(), v.Data(), v.Length(), 0) : ::lsetxattr(path.c_str(), name.c_str(), v.Data(), v.Length(), 0);
  if (rc != 0) return Throw(ErrnoError(env, errno, byFd ? "fsetxattr" : "lsetxattr", name));
  return env.Undefined();
}

// ---- seek(fd, position, hole: boolean) -> the next data (hole=false) or hole (hole=true) at or
// after `position`, or -1 past the end of the file (ENXIO). For files backed up sparsely.
Napi::Value Seek(const Napi::CallbackInfo& info) {
  int fd;
  int64_t pos;
  if (!DirFd(info, 0, &fd) || fd < 0 || !Int(info, 1, &pos) || pos < 0 || info.Length() < 3 || !info[2].IsBoolean())
    return Bad(info, "seek(fd, position, hole: boolean)");
  off_t r = ::lseek(fd, off_t(pos), info[2].As<Napi::Boolean>().Value() ? SEEK_HOLE : SEEK_DATA);
  if (r < 0) {
    if (errno == ENXIO) return Napi::Number::New(info.Env(), -1);
    return Throw(ErrnoError(info.Env(), errno, "lseek", ""));
  }
  return Napi::Number::New(info.Env(), double(r));
}

}  // namespace

Napi::Object Exports(Napi::Env env) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("openat", Napi::Function::New(env, OpenAt, "openat"));
  o.Set("mkdirat", Napi::Function::New(env, MkdirAt, "mkdirat"));
  o.Set("symlinkat", Napi::Function::New(env, SymlinkAt, "symlinkat"));
  o.Set("mknodat", Napi::Function::New(env, MknodAt, "mknodat"));
  o.Set("linkat", Napi::Function::New(env, LinkAt, "linkat"));
  o.Set("renameat", Napi::Function::New(env, RenameAt, "renameat"));
  o.Set("unlinkat", Napi::Function::New(env, UnlinkAt, "unlinkat"));
  o.Set("fstatat", Napi::Function::New(env, FstatAt, "fstatat"));
  o.Set("fchownat", Napi::Function::New(env, FchownAt, "fchownat"));
  o.Set("fchmodat", Napi::Function::New(env, FchmodAt, "fchmodat"));
  o.Set("utimensat", Napi::Function::New(env, UtimensAt, "utimensat"));
  o.Set("readdir", Napi::Function::New(env, ReadDir, "readdir"));
  o.Set("listxattr", Napi::Function::New(env, ListXattr, "listxattr"));
  o.Set("getxattr", Napi::Function::New(env, GetXattr, "getxattr"));
  o.Set("setxattr", Napi::Function::New(env, SetXattr, "setxattr"));
  o.Set("seek", Napi::Function::New(env, Seek, "seek"));
  Napi::Object c = Napi::Object::New(env);
  c.Set("AT_FDCWD", Napi::Number::New(env, AT_FDCWD));
  c.Set("AT_SYMLINK_NOFOLLOW", Napi::Number::New(env, AT_SYMLINK_NOFOLLOW));
  c.Set("AT_REMOVEDIR", Napi::Number::New(env, AT_REMOVEDIR));
  c.Set("O_RDONLY", Napi::Number::New(env, O_RDONLY));
  c.Set("O_WRONLY", Napi::Number::New(env, O_WRONLY));
  c.Set("O_RDWR", Napi::Number::New(env, O_RDWR));
  c.Set("O_CREAT", Napi::Number::New(env, O_CREAT));
  c.Set("O_EXCL", Napi::Number::New(env, O_EXCL));
  c.Set("O_NOFOLLOW", Napi::Number::New(env, O_NOFOLLOW));
  c.Set("O_DIRECTORY", Napi::Number::New(env, O_DIRECTORY));
  c.Set("O_NONBLOCK", Napi::Number::New(env, O_NONBLOCK));
  c.Set("O_NOCTTY", Napi::Number::New(env, O_NOCTTY));
  c.Set("O_PATH", Napi::Number::New(env, O_PATH));
  o.Set("constants", c);
  return o;
}

}  // namespace shmpipe_fsops
