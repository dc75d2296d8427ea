#include "mmsb/log/PosixFile.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {
FileObserver* g_observer = nullptr;
[[noreturn]] void io_fail(const char* what, const std::string& path, int err) {
  fail(ErrorCode::Durability, what, " '", path, "' failed: ", std::strerror(err));
}

// Writes every byte, retrying short writes and EINTR: put(data, count, done) is one write(2) or
// pwrite(2) call of `count` bytes from `data`, `done` bytes into the span.
template <class Put>
void write_fully(const std::string& path, std::span<const std::byte> bytes, Put put) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = put(bytes.data() + done, bytes.size() - done, done);
    if (n < 0) {
      if (errno == EINTR) continue;
      io_fail("write to", path, errno);
    }
    done += static_cast<std::size_t>(n);
  }
}
}  // namespace

void set_file_observer(FileObserver* observer) noexcept { g_observer = observer; }

PosixFile::PosixFile(const std::string& path, int flags, unsigned mode) : path_(path) {
  // A file opened to be written is one mmsb made: a symlink planted under its name (by anyone
  // who may write the directory) must not redirect the write to a file elsewhere.
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_CREAT) != 0) flags |= O_NOFOLLOW;
  do {
    fd_ = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd_ < 0 && errno == EINTR);
  if (fd_ < 0) io_fail("open", path, errno);
}

PosixFile& PosixFile::operator=(PosixFile&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

PosixFile::~PosixFile() {
  if (fd_ >= 0) ::close(fd_);
}

void PosixFile::write_all(std::span<const std::byte> bytes) { write_all({bytes}); }

void PosixFile::write_all(std::initializer_list<std::span<const std::byte>> pieces) {
  if (g_observer != nullptr) {  // tests only: the joined copy costs nothing in normal use
    std::vector<std::byte> joined;
    for (std::span<const std::byte> p : pieces) joined.insert(joined.end(), p.begin(), p.end());
    const off_t at = ::lseek(fd_, 0, SEEK_CUR);
    g_observer->before_write(path_, static_cast<std::uint64_t>(at < 0 ? 0 : at), joined);
  }
  for (std::span<const std::byte> p : pieces) {
    write_fully(path_, p, [&](const std::byte* b, std::size_t n, std::size_t) { return ::write(fd_, b, n); });
  }
}

void PosixFile::write_at(std::uint64_t offset, std::span<const std::byte> bytes) {
  if (g_observer != nullptr) g_observer->before_write(path_, offset, bytes);
  write_fully(path_, bytes, [&](const std::byte* p, std::size_t n, std::size_t done) {
    return ::pwrite(fd_, p, n, static_cast<off_t>(offset + done));
  });
}

void PosixFile::datasync() {
  if (g_observer != nullptr) g_observer->before_sync(path_);
  if (::fdatasync(fd_) != 0) io_fail("fdatasync of", path_, errno);
}

void PosixFile::truncate(std::uint64_t size) {
  if (g_observer != nullptr) g_observer->before_truncate(path_, size);
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) io_fail("ftruncate of", path_, errno);
}

std::uint64_t PosixFile::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) io_fail("fstat of", path_, errno);
  return static_cast<std::uint64_t>(st.st_size);
}

void PosixFile::seek_end() {
  if (::lseek(fd_, 0, SEEK_END) < 0) io_fail("lseek in", path_, errno);
}

std::vector<std::byte> PosixFile::read_all() const {
  std::vector<std::byte> out(size());
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      io_fail("read of", path_, errno);
    }
    if (n == 0) break;  // shrank meanwhile: keep what exists
    done += static_cast<std::size_t>(n);
  }
  out.resize(done);
  return out;
}

bool PosixFile::try_lock() {
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) return true;
  if (errno == EWOULDBLOCK) return false;
  io_fail("flock of", path_, errno);
}

bool PosixFile::is_at(const std::string& path) const {
  struct stat mine {};
  if (::fstat(fd_, &mine) != 0) io_fail("fstat of", path_, errno);
  struct stat named {};
  return ::stat(path.c_str(), &named) == 0 && named.st_dev == mine.st_dev && named.st_ino == mine.st_ino;
}

void PosixFile::start_writeback(std::uint64_t offset, std::uint64_t length) noexcept {
  ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(length), SYNC_FILE_RANGE_WRITE);
}

void PosixFile::drop_cached() noexcept { ::posix_fadvise(fd_, 0, 0, POSIX_FADV_DONTNEED); }

void PosixFile::reserve(std::uint64_t offset, std::uint64_t length) noexcept {
  ::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset), static_cast<off_t>(length));
}

FileBytes::FileBytes(const std::string& path, How how) {
  PosixFile f(path, O_RDONLY);
  if (how == How::Read) {
    copy_ = f.read_all();
    data_ = copy_.data();
    size_ = copy_.size();
    return;
  }
  size_ = f.size();
  if (size_ == 0) return;
  void* m = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | (how == How::Map ? MAP_POPULATE : 0), f.fd(), 0);
  if (m == MAP_FAILED) io_fail("mmap of", path, errno);
  mapping_ = m;
  data_ = static_cast<const std::byte*>(m);
}

FileBytes& FileBytes::operator=(FileBytes&& o) noexcept {
  if (this != &o) {
    if (mapping_ != nullptr) ::munmap(mapping_, size_);
    mapping_ = o.mapping_;
    size_ = o.size_;
    copy_ = std::move(o.copy_);  // the buffer moves with it, so o.data_ stays right, borrowed or not
    data_ = o.data_;
    o.mapping_ = nullptr;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

FileBytes::~FileBytes() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

void sync_directory(const std::string& dir) {
  PosixFile d(dir, O_RDONLY | O_DIRECTORY);
  d.datasync();  // the observer sees the directory's path
}

void ensure_directory(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) return;
  if (errno != EEXIST) io_fail("mkdir", dir, errno);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) io_fail("stat", dir, errno);
  if (!S_ISDIR(st.st_mode)) {
    fail(ErrorCode::InvalidArgument, "'", dir, "' exists and is not a directory; a bus needs a directory of its own");
  }
}

std::vector<std::string> list_directory(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) io_fail("opendir", dir, errno);
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_type == DT_REG || e->d_type == DT_UNKNOWN) names.emplace_back(e->d_name);
  }
  ::closedir(d);
  return names;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void rename_file(const std::string& from, const std::string& to) {
  if (g_observer != nullptr) g_observer->before_rename(from, to);
  if (::rename(from.c_str(), to.c_str()) != 0) io_fail("rename of", from, errno);
}

void remove_file(const std::string& path) {
  if (g_observer != nullptr) g_observer->before_remove(path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) io_fail("unlink", path, errno);
}

}  // namespace mmsb
