#pragma once
/// The log layer's only contact with the operating system: files, directory sync, the writer
/// lock. Every failure becomes Error(Durability) naming the path and the errno text.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace mmsb {

/// Reliability-test hook, in the spirit of SQLite's test VFS: when installed, it sees every write,
/// fdatasync, truncate and rename the log layer makes, before it happens, and may throw to
/// simulate a crash or an I/O error at exactly that point. Never installed in normal use.
class FileObserver {
 public:
  virtual ~FileObserver() = default;
  virtual void before_write(const std::string& path, std::uint64_t offset, std::span<const std::byte> bytes) = 0;
  /// `path` is a file, or a directory whose entries (new files, renames) become durable.
  virtual void before_sync(const std::string& path) = 0;
  virtual void before_truncate(const std::string& path, std::uint64_t size) = 0;
  virtual void before_rename(const std::string& from, const std::string& to) = 0;
  /// A file about to be unlinked (retention dropping what a checkpoint covers).
  virtual void before_remove(const std::string& /*path*/) {}
};
/// Installs (or with nullptr removes) the observer for the whole process. Not thread safe: tests
/// install it while no bus is writing.
void set_file_observer(FileObserver* observer) noexcept;

/// An open file descriptor, closed on destruction. Not thread safe.
class PosixFile {
 public:
  PosixFile() = default;
  /// Opens `path` with open(2) flags and mode; throws Error(Durability). To write or create, the
  /// last component must not be a symlink (O_NOFOLLOW).
  PosixFile(const std::string& path, int flags, unsigned mode = 0600);
  PosixFile(PosixFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  PosixFile& operator=(PosixFile&& o) noexcept;
  ~PosixFile();

  bool is_open() const noexcept { return fd_ >= 0; }
  const std::string& path() const noexcept { return path_; }
  /// Writes all bytes at the current position (retries short writes and EINTR).
  void write_all(std::span<const std::byte> bytes);
  /// Writes the pieces one after the other at the current position: one write for the observer
  /// (which then sees their bytes joined), so a record written in pieces is still one write.
  void write_all(std::initializer_list<std::span<const std::byte>> pieces);
  /// Writes all bytes at `offset` (pwrite: the current position does not move).
  void write_at(std::uint64_t offset, std::span<const std::byte> bytes);
  void datasync();
  void truncate(std::uint64_t size);
  std::uint64_t size() const;
  void seek_end();
  /// Reads the whole file (bounded by its size at the time of the call).
  std::vector<std::byte> read_all() const;
  /// Takes an exclusive advisory lock without waiting; false if another holder has it.
  bool try_lock();
  /// Whether `path` names this open file (same device and inode): false once it was unlinked
  /// or replaced. A lock on a file no longer at its path locks nothing.
  bool is_at(const std::string& path) const;
  /// Starts writing back the dirty pages of [offset, offset + length) without waiting
  /// (sync_file_range WRITE). Durability promises nothing: a hint, so failures are ignored.
  void start_writeback(std::uint64_t offset, std::uint64_t length) noexcept;
  /// Asks the OS to drop the file's clean pages from its cache (posix_fadvise DONTNEED); dirty
  /// pages stay. A hint: failures are ignored.
  void drop_cached() noexcept;
  /// Reserves disk blocks for bytes [offset, offset + length) without changing the file's size
  /// (fallocate KEEP_SIZE), so appends into them skip the filesystem's block allocation;
  /// truncate(size) gives back what was not written. A hint: failures (no space, a filesystem
  /// without fallocate) are ignored.
  void reserve(std::uint64_t offset, std::uint64_t length) noexcept;
  int fd() const noexcept { return fd_; }

 private:
  int fd_ = -1;
  std::string path_;
};

/// The contents of a file, read-only: mapped (MAP_POPULATE) for files that never shrink
/// (sealed segments, checkpoints), or read into memory for a file a writer may still cut back
/// (the newest segment), so a reader never touches a page that disappears under it. Lazy maps
/// without reading ahead, for a reader that touches a few records of a big file while no writer
/// can cut it (the log's own lookups, under the bus's commit lock).
class FileBytes {
 public:
  enum class How { Map, Read, Lazy };
  FileBytes() = default;
  FileBytes(const std::string& path, How how);
  /// Bytes that live elsewhere (an in-memory checkpoint): borrowed, so they must outlive this.
  static FileBytes borrow(std::span<const std::byte> bytes) noexcept {
    FileBytes b;
    b.data_ = bytes.data();
    b.size_ = bytes.size();
    return b;
  }
  FileBytes(FileBytes&& o) noexcept { *this = std::move(o); }
  FileBytes& operator=(FileBytes&& o) noexcept;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::byte* begin() const noexcept { return data_; }
  const std::byte* end() const noexcept { return data_ + size_; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  void* mapping_ = nullptr;  // non-null when mapped
  std::vector<std::byte> copy_;
};

/// fsync of a directory, so renames and new files in it survive power loss.
void sync_directory(const std::string& dir);
/// Creates `dir` (mode 0700) if missing; throws Error(InvalidArgument) if `dir` is something
/// else than a directory, Error(Durability) if it cannot be created.
void ensure_directory(const std::string& dir);
/// Names of the regular files in `dir`.
std::vector<std::string> list_directory(const std::string& dir);
bool path_exists(const std::string& path);
/// Whether `path` names a directory (links followed).
bool is_directory(const std::string& path);
void rename_file(const std::string& from, const std::string& to);
void remove_file(const std::string& path);

}  // namespace mmsb
