# Turns the binary descriptor set INPUT into a C++ source OUTPUT defining
# sandboxlet::api::internal::kDescriptorSet (see api/openapi.cpp).
file(READ ${INPUT} _hex HEX)
string(LENGTH "${_hex}" _len)
math(EXPR _size "${_len} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," _bytes "${_hex}")
string(REGEX REPLACE "(('\\\\x..',){16})" "\\1\n" _bytes "${_bytes}")
file(WRITE ${OUTPUT} "// Generated from ${INPUT}; do not edit.\n#include <cstddef>\n\n"
  "namespace sandboxlet::api::internal {\n"
  "extern const char kDescriptorSet[];\nextern const std::size_t kDescriptorSetSize;\n"
  "const char kDescriptorSet[] = {\n${_bytes}\n};\n"
  "const std::size_t kDescriptorSetSize = ${_size};\n"
  "}  // namespace sandboxlet::api::internal\n")
