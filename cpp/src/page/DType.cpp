#include "mmsb/page/DType.hpp"

#include <array>

#include "mmsb/core/Error.hpp"

namespace mmsb {
namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  char kind;
  std::size_t itemsize;
};
constexpr std::array<DTypeInfo, 15> kTypes{{
    {DType::Raw, "raw", 'V', 1},
    {DType::Bool, "bool", 'b', 1},
    {DType::Int8, "int8", 'i', 1},
    {DType::Int16, "int16", 'i', 2},
    {DType::Int32, "int32", 'i', 4},
    {DType::Int64, "int64", 'i', 8},
    {DType::UInt8, "uint8", 'u', 1},
    {DType::UInt16, "uint16", 'u', 2},
    {DType::UInt32, "uint32", 'u', 4},
    {DType::UInt64, "uint64", 'u', 8},
    {DType::Float16, "float16", 'f', 2},
    {DType::Float32, "float32", 'f', 4},
    {DType::Float64, "float64", 'f', 8},
    {DType::Complex64, "complex64", 'c', 8},
    {DType::Complex128, "complex128", 'c', 16},
}};
const DTypeInfo& info(DType t) noexcept { return kTypes[static_cast<std::size_t>(t)]; }
constexpr std::string_view kSupported =
    "bool, int8/16/32/64, uint8/16/32/64, float16/32/64, complex64/128";
}  // namespace

std::size_t dtype_itemsize(DType t) noexcept { return info(t).itemsize; }
std::string_view dtype_name(DType t) noexcept { return info(t).name; }
char dtype_kind(DType t) noexcept { return info(t).kind; }

DType dtype_from_kind(char kind, std::size_t itemsize) {
  for (const DTypeInfo& t : kTypes) {
    if (t.type != DType::Raw && t.kind == kind && t.itemsize == itemsize) return t.type;
  }
  fail(ErrorCode::InvalidArgument, "unsupported dtype (kind '", kind, "', ", itemsize,
       " bytes); supported: ", kSupported);
}

std::optional<DType> find_dtype(std::string_view name) noexcept {
  for (const DTypeInfo& t : kTypes) {
    if (t.type != DType::Raw && t.name == name) return t.type;
  }
  return std::nullopt;
}

DType parse_dtype(std::string_view name) {
  if (name == "raw") return DType::Raw;
  if (std::optional<DType> t = find_dtype(name)) return *t;
  fail(ErrorCode::InvalidArgument, "unsupported dtype '", name, "'; supported: ", kSupported);
}

}  // namespace mmsb
