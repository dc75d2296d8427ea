#pragma once
/// The one exception type of the engine. Every failure carries an ErrorCode that the Python
/// bindings map to one class of mmsb.errors, and a message naming the value at fault plus a hint.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace mmsb {

/// Stable error categories; the numbering is part of the binding contract (errors.py mirrors it).
enum class ErrorCode : int {
  InvalidArgument = 0,
  PageNotFound = 1,
  InvalidDelta = 2,
  EpochConflict = 3,
  GraphCycle = 4,
  Graph = 5,
  Propagation = 6,
  LogCorrupt = 7,
  Durability = 8,
  BusLocked = 9,
  HistoryUnavailable = 10,
  QueueFull = 11,
  Closed = 12,
  DeviceUnavailable = 13,
  OutOfMemory = 14,
  Internal = 15,
  ReadOnly = 16,
};
inline constexpr int kErrorCodeCount = 17;

/// Name of the Python exception class for a code ("PageNotFoundError", ...).
const char* error_class_name(ErrorCode code) noexcept;

/// Exception thrown by every layer. Thread safety: immutable after construction.
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

/// Builds a message from streamable parts and throws Error(code, message).
template <class... Parts>
[[noreturn]] void fail(ErrorCode code, Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  throw Error(code, out.str());
}

}  // namespace mmsb
