// GCC 12 reports a false -Wrestrict inside std::string::replace at -O3 (GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <quarot/io.hpp>

using namespace quarot;
namespace fs = std::filesystem;

namespace {
struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() / ("quarot_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~temp_dir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}
std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
}  // namespace

TEST_CASE(".npy round trips for every dtype and a NumPy-written golden file") {
  temp_dir dir;
  const std::vector<float> f = {1.5f, -2.0f, 0.0f, 3.25f, 1e-8f, -7.0f};
  io::write_npy(dir.file("f.npy"), io::tensor::from(f, {2, 3}));
  auto t = io::read_npy(dir.file("f.npy"));
  CHECK(t.type == io::dtype::f32);
  CHECK(t.shape == std::vector<std::size_t>{2, 3});
  CHECK(t.to_float() == f);
  const std::vector<half> h = {to_half(1.0f), to_half(-0.5f), to_half(65504.0f)};
  io::write_npy(dir.file("h.npy"), io::tensor::from(h, {3}));
  CHECK(io::read_npy(dir.file("h.npy")).to_float() == std::vector<float>{1.0f, -0.5f, 65504.0f});
  const std::vector<std::int8_t> i8 = {-128, 0, 127, 5};
  io::write_npy(dir.file("i8.npy"), io::tensor::from(i8, {4, 1}));
  CHECK(io::read_npy(dir.file("i8.npy")).to_float() == std::vector<float>{-128, 0, 127, 5});
  const std::vector<std::int32_t> i32 = {-70000, 1, 2};
  io::write_npy(dir.file("i32.npy"), io::tensor::from(i32, {3}));
  const auto r32 = io::read_npy(dir.file("i32.npy"));
  CHECK(r32.type == io::dtype::i32);
  CHECK(r32.to_float() == std::vector<float>{-70000, 1, 2});
  io::write_npy(dir.file("empty.npy"), io::tensor::from(std::vector<float>{}, {0, 4}));
  CHECK(io::read_npy(dir.file("empty.npy")).numel() == 0);

  // Bytes of np.save('g.npy', np.array([[1, 2], [3, 4]], dtype='<f4')) (format 1.0).
  std::string golden = std::string("\x93NUMPY\x01\x00\x76\x00", 10);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  header += std::string(0x76 - header.size() - 1, ' ') + "\n";
  const float vals[4] = {1, 2, 3, 4};
  golden += header + std::string(reinterpret_cast<const char*>(vals), 16);
  write_bytes(dir.file("g.npy"), golden);
  const auto g = io::read_npy(dir.file("g.npy"));
  CHECK(g.shape == std::vector<std::size_t>{2, 2});
  CHECK(g.to_float() == std::vector<float>{1, 2, 3, 4});
  // Our writer produces the same layout: 64-byte aligned data, same header text.
  io::write_npy(dir.file("g2.npy"), io::tensor::from(std::vector<float>{1, 2, 3, 4}, {2, 2}));
  CHECK(read_bytes(dir.file("g2.npy")) == golden);
}

TEST_CASE(".npy: truncated, garbled and unsupported files are clear errors") {
  temp_dir dir;
  io::write_npy(dir.file("ok.npy"), io::tensor::from(std::vector<float>(100, 1.0f), {10, 10}));
  const std::string ok = read_bytes(dir.file("ok.npy"));
  write_bytes(dir.file("trunc.npy"), ok.substr(0, ok.size() - 4));
  CHECK_THROWS_WITH_AS(io::read_npy(dir.file("trunc.npy")), doctest::Contains("data truncated"), error);
  write_bytes(dir.file("short.npy"), ok.substr(0, 20));
  CHECK_THROWS_AS(io::read_npy(dir.file("short.npy")), error);
  write_bytes(dir.file("magic.npy"), "NOTNUMPY" + ok.substr(8));
  CHECK_THROWS_WITH_AS(io::read_npy(dir.file("magic.npy")), doctest::Contains("magic"), error);
  std::string f8 = ok;
  f8.replace(f8.find("<f4"), 3, "<f8");
  write_bytes(dir.file("f8.npy"), f8);
  // Claiming f8 for 400 bytes of f4 data: the size check catches the lie.
  CHECK_THROWS_WITH_AS(io::read_npy(dir.file("f8.npy")), doctest::Contains("data truncated"), error);
  std::string c8 = ok;
  c8.replace(c8.find("<f4"), 3, "<c8");
  write_bytes(dir.file("c8.npy"), c8);
  CHECK_THROWS_WITH_AS(io::read_npy(dir.file("c8.npy")), doctest::Contains("'<c8'"), error);
  std::string fortran = ok;
  fortran.replace(fortran.find("False"), 5, "True ");
  write_bytes(dir.file("fortran.npy"), fortran);
  CHECK_THROWS_WITH_AS(io::read_npy(dir.file("fortran.npy")), doctest::Contains("Fortran"), error);
  std::string shape = ok;
  shape.replace(shape.find("(10, 10)"), 8, "(10, x0)");
  write_bytes(dir.file("shape.npy"), shape);
  CHECK_THROWS_AS(io::read_npy(dir.file("shape.npy")), error);
  CHECK_THROWS_WITH_AS(io::read_npy(dir.file("missing.npy")), doctest::Contains("cannot open"), error);
}

TEST_CASE(".safetensors: write, mmap read of every dtype, metadata") {
  temp_dir dir;
  std::map<std::string, io::tensor> ts;
  ts["a.weight"] = io::tensor::from(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  ts["b"] = io::tensor::from(std::vector<half>{to_half(0.5f), to_half(-1.0f)}, {2});
  ts["c"] = io::tensor::from(std::vector<bfloat16>{to_bfloat16(3.0f)}, {1});
  ts["d"] = io::tensor::from(std::vector<std::int8_t>{-3, 4}, {1, 2});
  ts["e"] = io::tensor::from(std::vector<std::int32_t>{123456}, {1});
  io::write_safetensors(dir.file("m.safetensors"), ts, {{"format", "pt"}, {"quote\"d", "x"}});
  const io::safetensors_file f(dir.file("m.safetensors"));
  CHECK(f.names() == std::vector<std::string>{"a.weight", "b", "c", "d", "e"});
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("quote\"d") == "x");
  CHECK(f.info("a.weight").shape == std::vector<std::size_t>{2, 3});
  CHECK(f.get("a.weight").to_float() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(f.get("b").to_float() == std::vector<float>{0.5f, -1.0f});
  CHECK(f.get("c").to_float() == std::vector<float>{3.0f});
  CHECK(f.get("d").to_float() == std::vector<float>{-3, 4});
  CHECK(f.get("e").to_float() == std::vector<float>{123456});
  CHECK(f.bytes("a.weight").size() == 24);
  CHECK_THROWS_WITH_AS((void)f.info("nope"), doctest::Contains("'nope'"), error);
}

TEST_CASE(".safetensors: lying and truncated headers are clear errors") {
  temp_dir dir;
  auto make = [&](const std::string& json, std::size_t data_bytes, std::uint64_t claimed = 0) {
    std::string s(8, '\0');
    const std::uint64_t n = claimed ? claimed : json.size();
    for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
    s += json + std::string(data_bytes, '\0');
    write_bytes(dir.file("x.safetensors"), s);
    return dir.file("x.safetensors");
  };
  CHECK_NOTHROW(io::safetensors_file(make(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8)));
  CHECK_THROWS_WITH_AS(io::safetensors_file(make(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
                       doctest::Contains("outside"), error);
  CHECK_THROWS_WITH_AS(io::safetensors_file(make(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
                       doctest::Contains("needs 12"), error);
  CHECK_THROWS_WITH_AS(io::safetensors_file(make(R"({"t":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", 8)),
                       doctest::Contains("C64"), error);
  // Wider types that real checkpoints carry (e.g. BERT's I64 position_ids) are read.
  const io::safetensors_file wide(make(R"({"p":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8));
  CHECK(wide.get("p").to_float() == std::vector<float>{0.0f});
  CHECK_THROWS_WITH_AS(io::safetensors_file(make(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8)),
                       doctest::Contains("malformed JSON"), error);
  CHECK_THROWS_WITH_AS(io::safetensors_file(make(R"({"t":1})", 0, 1000)), doctest::Contains("exceeds the file size"),
                       error);
  CHECK_THROWS_AS(io::safetensors_file(make(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0)), error);
  CHECK_THROWS_AS(io::safetensors_file(make(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8)), error);
  CHECK_THROWS_AS(io::safetensors_file(make(R"([1,2])", 0)), error);
  CHECK_THROWS_AS(io::safetensors_file(make(std::string(100, '['), 0)), error);  // too deep / unterminated
  write_bytes(dir.file("tiny.safetensors"), "abc");
  CHECK_THROWS_WITH_AS(io::safetensors_file(dir.file("tiny.safetensors")), doctest::Contains("shorter"), error);
}

namespace {
// A small GGUF writer for the tests (little-endian, version 3, alignment 32).
struct gguf_writer {
  std::string meta, infos, data;
  int n_meta = 0, n_tensors = 0;
  template <class T>
  static void put(std::string& s, T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  static void put_str(std::string& s, const std::string& x) {
    put<std::uint64_t>(s, x.size());
    s += x;
  }
  void meta_u32(const std::string& k, std::uint32_t v) {
    put_str(meta, k);
    put<std::uint32_t>(meta, 4);
    put(meta, v);
    ++n_meta;
  }
  void meta_str(const std::string& k, const std::string& v) {
    put_str(meta, k);
    put<std::uint32_t>(meta, 8);
    put_str(meta, v);
    ++n_meta;
  }
  void meta_str_array(const std::string& k, const std::vector<std::string>& v) {
    put_str(meta, k);
    put<std::uint32_t>(meta, 9);
    put<std::uint32_t>(meta, 8);
    put<std::uint64_t>(meta, v.size());
    for (auto& x : v) put_str(meta, x);
    ++n_meta;
  }
  void tensor(const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type, const std::string& bytes) {
    while (data.size() % 32) data += '\0';
    put_str(infos, name);
    put<std::uint32_t>(infos, std::uint32_t(dims.size()));
    for (auto d : dims) put(infos, d);
    put(infos, type);
    put<std::uint64_t>(infos, data.size());
    data += bytes;
    ++n_tensors;
  }
  std::string bytes() const {
    std::string s = "GGUF";
    put<std::uint32_t>(s, 3);
    put<std::uint64_t>(s, std::uint64_t(n_tensors));
    put<std::uint64_t>(s, std::uint64_t(n_meta));
    s += meta + infos;
    while (s.size() % 32) s += '\0';
    return s + data;
  }
};
std::string f16(float v) {
  const auto h = to_half(v);
  return std::string(reinterpret_cast<const char*>(&h.bits), 2);
}
}  // namespace

TEST_CASE("GGUF: metadata, tensor infos and F32/F16/Q4_0/Q4_1/Q8_0 dequantization") {
  temp_dir dir;
  gguf_writer w;
  w.meta_str("general.architecture", "llama");
  w.meta_u32("llama.embedding_length", 576);
  w.meta_str_array("tokenizer.ggml.tokens", {"<s>", "hello", "world"});
  const float f32v[6] = {1, -2, 3.5f, 0, 7, -8};
  w.tensor("a", {3, 2}, 0, std::string(reinterpret_cast<const char*>(f32v), 24));
  w.tensor("h", {2}, 1, f16(0.5f) + f16(-3.0f));
  std::string q40 = f16(0.25f), q41 = f16(0.5f) + f16(-1.0f), q80 = f16(2.0f);
  for (int j = 0; j < 16; ++j) {
    q40 += char((j & 0x0f) | ((15 - j) << 4));  // value j: j - 8; value j + 16: 7 - j
    q41 += char((j & 0x0f) | ((15 - j) << 4));
  }
  for (int j = 0; j < 32; ++j) q80 += char(std::int8_t(j - 16));
  w.tensor("q40", {32}, 2, q40);
  w.tensor("q41", {32}, 3, q41);
  w.tensor("q80", {32}, 8, q80);
  w.tensor("k4", {256}, 12, std::string(144, '\0'));  // Q4_K: listed, not dequantized
  write_bytes(dir.file("m.gguf"), w.bytes());

  const io::gguf_file f(dir.file("m.gguf"));
  CHECK(f.version() == 3);
  CHECK(f.meta("general.architecture").s == "llama");
  CHECK(f.meta("llama.embedding_length").as_uint() == 576);
  CHECK(f.meta("tokenizer.ggml.tokens").arr.size() == 3);
  CHECK(f.meta("tokenizer.ggml.tokens").arr[1].s == "hello");
  CHECK(f.info("a").dims == std::vector<std::uint64_t>{3, 2});
  CHECK(f.to_float("a") == std::vector<float>(f32v, f32v + 6));
  CHECK(f.to_float("h") == std::vector<float>{0.5f, -3.0f});
  const auto a = f.to_float("q40"), b = f.to_float("q41"), c = f.to_float("q80");
  for (int j = 0; j < 16; ++j) {
    CHECK(a[j] == 0.25f * float(j - 8));
    CHECK(a[j + 16] == 0.25f * float(7 - j));
    CHECK(b[j] == 0.5f * float(j) - 1.0f);
    CHECK(b[j + 16] == 0.5f * float(15 - j) - 1.0f);
  }
  for (int j = 0; j < 32; ++j) CHECK(c[j] == 2.0f * float(j - 16));
  CHECK_THROWS_WITH_AS((void)f.to_float("k4"), doctest::Contains("ggml type 12"), error);
  CHECK_THROWS_AS((void)f.meta("nope"), error);
}

TEST_CASE("GGUF: truncated and lying files are clear errors") {
  temp_dir dir;
  gguf_writer w;
  w.meta_u32("general.alignment", 32);
  const float v[2] = {1, 2};
  w.tensor("t", {2}, 0, std::string(reinterpret_cast<const char*>(v), 8));
  const std::string ok = w.bytes();
  write_bytes(dir.file("ok.gguf"), ok);
  CHECK_NOTHROW(io::gguf_file(dir.file("ok.gguf")));
  write_bytes(dir.file("trunc.gguf"), ok.substr(0, ok.size() - 4));
  CHECK_THROWS_WITH_AS(io::gguf_file(dir.file("trunc.gguf")), doctest::Contains("outside"), error);
  write_bytes(dir.file("short.gguf"), ok.substr(0, 40));
  CHECK_THROWS_WITH_AS(io::gguf_file(dir.file("short.gguf")), doctest::Contains("truncated"), error);
  write_bytes(dir.file("magic.gguf"), "GGUX" + ok.substr(4));
  CHECK_THROWS_WITH_AS(io::gguf_file(dir.file("magic.gguf")), doctest::Contains("magic"), error);
  std::string ver = ok;
  ver[4] = 9;
  write_bytes(dir.file("ver.gguf"), ver);
  CHECK_THROWS_WITH_AS(io::gguf_file(dir.file("ver.gguf")), doctest::Contains("version 9"), error);
  std::string count = ok;
  count[8 + 7] = 0x7f;  // tensor count ~ 2^62
  write_bytes(dir.file("count.gguf"), count);
  CHECK_THROWS_AS(io::gguf_file(dir.file("count.gguf")), error);
  gguf_writer odd;
  odd.tensor("q", {31}, 2, std::string(18, '\0'));  // Q4_0 needs whole 32-value blocks
  write_bytes(dir.file("odd.gguf"), odd.bytes());
  CHECK_THROWS_WITH_AS(io::gguf_file(dir.file("odd.gguf")), doctest::Contains("32-value blocks"), error);
  gguf_writer align;
  align.meta_u32("general.alignment", 24);
  write_bytes(dir.file("align.gguf"), align.bytes());
  CHECK_THROWS_WITH_AS(io::gguf_file(dir.file("align.gguf")), doctest::Contains("power of two"), error);
}
