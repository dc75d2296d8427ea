#pragma once
/// Element types of typed pages. A raw page has DType::Raw and is viewed as bytes.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace mmsb {

enum class DType : std::uint8_t {
  Raw = 0,
  Bool,
  Int8,
  Int16,
  Int32,
  Int64,
  UInt8,
  UInt16,
  UInt32,
  UInt64,
  Float16,
  Float32,
  Float64,
  Complex64,
  Complex128,
};
/// Whether `code` is a DType (checked where one is taken and where one is decoded).
constexpr bool known_dtype(std::uint8_t code) noexcept { return code <= static_cast<std::uint8_t>(DType::Complex128); }

/// Bytes per element (1 for Raw).
std::size_t dtype_itemsize(DType t) noexcept;
/// NumPy spelling: "float32", "bool", ...; "raw" for Raw.
std::string_view dtype_name(DType t) noexcept;
/// NumPy kind character: 'b' bool, 'i' signed, 'u' unsigned, 'f' float, 'c' complex, 'V' raw.
char dtype_kind(DType t) noexcept;
/// Inverse of (kind, itemsize); throws Error(InvalidArgument) naming the unsupported type.
DType dtype_from_kind(char kind, std::size_t itemsize);
/// Inverse of dtype_name; throws Error(InvalidArgument) listing the supported names.
DType parse_dtype(std::string_view name);
/// Inverse of dtype_name for typed names; nullopt for "raw" or unknown names.
std::optional<DType> find_dtype(std::string_view name) noexcept;

}  // namespace mmsb
