#pragma once
/// UTF-8 validation for text read from files a user may have received from elsewhere: names,
/// metadata keys and values, locations. Python decodes them strictly, so what passes here must be
/// what its decoder accepts: no overlong forms, no surrogates (U+D800..U+DFFF), nothing past
/// U+10FFFF. Thread safe (a pure function).
#include <string_view>

namespace mmsb {

/// Whether `s` is well-formed UTF-8 (RFC 3629). Never throws.
bool is_utf8(std::string_view s) noexcept;
/// For text the engine is handed to log (a page name, a metadata key): throws
/// Error(InvalidArgument) naming `what` unless `s` is UTF-8, since a log holding it would not
/// read back.
void require_utf8(std::string_view s, std::string_view what);

}  // namespace mmsb
