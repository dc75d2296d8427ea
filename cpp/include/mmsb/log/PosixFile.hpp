#pragma once
/// The log layer's only contact with the operating system: files, directory sync, the writer
/// lock. Every failure becomes Error(Durability) naming the path and the errno text.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace mmsb {

/// An open file descriptor, closed on destruction. Not thread safe.
class PosixFile {
 public:
  PosixFile() = default;
  /// Opens `path` with open(2) flags and mode; throws Error(Durability).
  PosixFile(const std::string& path, int flags, unsigned mode = 0600);
  PosixFile(PosixFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
  PosixFile& operator=(PosixFile&& o) noexcept;
  ~PosixFile();

  bool is_open() const noexcept { return fd_ >= 0; }
  const std::string& path() const noexcept { return path_; }
  /// Writes all bytes at the current position (retries short writes and EINTR).
  void write_all(std::span<const std::byte> bytes);
  void datasync();
  void truncate(std::uint64_t size);
  std::uint64_t size() const;
  void seek_end();
  /// Reads the whole file (bounded by its size at the time of the call).
  std::vector<std::byte> read_all() const;
  /// Takes an exclusive advisory lock without waiting; false if another holder has it.
  bool try_lock();

 private:
  int fd_ = -1;
  std::string path_;
};

/// fsync of a directory, so renames and new files in it survive power loss.
void sync_directory(const std::string& dir);
/// Creates `dir` (mode 0700) if missing; throws Error(Durability) if it cannot.
void ensure_directory(const std::string& dir);
/// Names of the regular files in `dir`.
std::vector<std::string> list_directory(const std::string& dir);
bool path_exists(const std::string& path);
void rename_file(const std::string& from, const std::string& to);
void remove_file(const std::string& path);

}  // namespace mmsb
