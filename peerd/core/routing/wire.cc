#include "peerd/core/routing/wire.h"

#include "peerd/core/common/bytes.h"

namespace peerd::routing::wire {

std::string_view describe(DecodeError error) {
  switch (error) {
    case DecodeError::kOversized:
      return "datagram larger than the maximum";
    case DecodeError::kTruncated:
      return "datagram ends inside a field";
    case DecodeError::kBadMagic:
      return "bad magic";
    case DecodeError::kBadVersion:
      return "unsupported version";
    case DecodeError::kUnknownType:
      return "unknown message type";
    case DecodeError::kTooManyContacts:
      return "contact list longer than the maximum";
    case DecodeError::kBadFamily:
      return "unknown address family";
    case DecodeError::kBadPort:
      return "port 0";
    case DecodeError::kBadTtl:
      return "provider ttl out of range";
    case DecodeError::kBadFlag:
      return "boolean byte other than 0 or 1";
    case DecodeError::kTrailingBytes:
      return "trailing bytes after the message";
  }
  return "unknown decode error";
}

std::string_view describe(EncodeError error) {
  switch (error) {
    case EncodeError::kTooManyContacts:
      return "contact list longer than the maximum";
    case EncodeError::kBadFamily:
      return "unknown address family";
    case EncodeError::kBadPort:
      return "port 0";
    case EncodeError::kBadTtl:
      return "provider ttl out of range";
    case EncodeError::kOversized:
      return "message larger than the maximum datagram";
  }
  return "unknown encode error";
}

namespace {

constexpr size_t kContactFixedBytes = NodeId::kBytes + 1 + 2;

size_t contact_size(const Contact& contact) {
  return kContactFixedBytes + contact.endpoint.address_size();
}

size_t list_size(const std::vector<Contact>& contacts) {
  size_t size = 1;
  for (const auto& contact : contacts) size += contact_size(contact);
  return size;
}

size_t body_size(const Body& body) {
  struct Visitor {
    size_t operator()(const Ping&) const { return 0; }
    size_t operator()(const Pong&) const { return 0; }
    size_t operator()(const FindNode&) const { return NodeId::kBytes; }
    size_t operator()(const Nodes& nodes) const { return list_size(nodes.contacts); }
    size_t operator()(const GetProviders&) const { return NodeId::kBytes; }
    size_t operator()(const Providers& providers) const {
      return list_size(providers.providers) + list_size(providers.closer);
    }
    size_t operator()(const AddProvider&) const { return NodeId::kBytes + 4; }
    size_t operator()(const AddProviderAck&) const { return 1; }
  };
  return std::visit(Visitor{}, body);
}

bool valid_family(Endpoint::Family family) {
  return family == Endpoint::Family::kIpv4 || family == Endpoint::Family::kIpv6;
}

std::optional<EncodeError> check_list(const std::vector<Contact>& contacts) {
  if (contacts.size() > kContactsMax) return EncodeError::kTooManyContacts;
  for (const auto& contact : contacts) {
    if (!valid_family(contact.endpoint.family)) return EncodeError::kBadFamily;
    if (contact.endpoint.port == 0) return EncodeError::kBadPort;
  }
  return std::nullopt;
}

std::optional<EncodeError> check(const Message& message) {
  if (const auto* nodes = std::get_if<Nodes>(&message.body)) {
    if (auto error = check_list(nodes->contacts)) return error;
  }
  if (const auto* providers = std::get_if<Providers>(&message.body)) {
    if (auto error = check_list(providers->providers)) return error;
    if (auto error = check_list(providers->closer)) return error;
  }
  if (const auto* add = std::get_if<AddProvider>(&message.body)) {
    if (add->ttl_millis == 0 || add->ttl_millis > kProviderTtlMillisMax) return EncodeError::kBadTtl;
  }
  if (encoded_size(message) > kDatagramBytesMax) return EncodeError::kOversized;
  return std::nullopt;
}

void write_id(ByteWriter& writer, const NodeId& id) {
  writer.bytes(id.bytes);
}

void write_list(ByteWriter& writer, const std::vector<Contact>& contacts) {
  writer.u8(static_cast<uint8_t>(contacts.size()));
  for (const auto& contact : contacts) {
    write_id(writer, contact.id);
    writer.u8(static_cast<uint8_t>(contact.endpoint.family));
    writer.bytes(std::span<const uint8_t>(contact.endpoint.address.data(), contact.endpoint.address_size()));
    writer.u16(contact.endpoint.port);
  }
}

void write_body(ByteWriter& writer, const Body& body) {
  struct Visitor {
    ByteWriter& writer;
    void operator()(const Ping&) const {}
    void operator()(const Pong&) const {}
    void operator()(const FindNode& find) const { write_id(writer, find.target); }
    void operator()(const Nodes& nodes) const { write_list(writer, nodes.contacts); }
    void operator()(const GetProviders& get) const { write_id(writer, get.key); }
    void operator()(const Providers& providers) const {
      write_list(writer, providers.providers);
      write_list(writer, providers.closer);
    }
    void operator()(const AddProvider& add) const {
      write_id(writer, add.key);
      writer.u32(add.ttl_millis);
    }
    void operator()(const AddProviderAck& ack) const { writer.u8(ack.stored ? 1 : 0); }
  };
  std::visit(Visitor{writer}, body);
}

bool read_id(ByteReader& reader, NodeId& id) {
  return reader.bytes(id.bytes.data(), id.bytes.size());
}

std::optional<DecodeError> read_list(ByteReader& reader, std::vector<Contact>& contacts) {
  uint8_t count = 0;
  if (!reader.u8(count)) return DecodeError::kTruncated;
  if (count > kContactsMax) return DecodeError::kTooManyContacts;
  contacts.reserve(count);
  for (uint8_t i = 0; i < count; ++i) {
    Contact contact;
    uint8_t family = 0;
    if (!read_id(reader, contact.id) || !reader.u8(family)) return DecodeError::kTruncated;
    if (family != static_cast<uint8_t>(Endpoint::Family::kIpv4) &&
        family != static_cast<uint8_t>(Endpoint::Family::kIpv6)) {
      return DecodeError::kBadFamily;
    }
    contact.endpoint.family = static_cast<Endpoint::Family>(family);
    if (!reader.bytes(contact.endpoint.address.data(), contact.endpoint.address_size()) ||
        !reader.u16(contact.endpoint.port)) {
      return DecodeError::kTruncated;
    }
    if (contact.endpoint.port == 0) return DecodeError::kBadPort;
    contacts.push_back(contact);
  }
  return std::nullopt;
}

std::optional<DecodeError> read_body(ByteReader& reader, uint8_t type, Body& body) {
  switch (type) {
    case 1:
      body = Ping{};
      return std::nullopt;
    case 2:
      body = Pong{};
      return std::nullopt;
    case 3: {
      FindNode find;
      if (!read_id(reader, find.target)) return DecodeError::kTruncated;
      body = find;
      return std::nullopt;
    }
    case 4: {
      Nodes nodes;
      if (auto error = read_list(reader, nodes.contacts)) return error;
      body = std::move(nodes);
      return std::nullopt;
    }
    case 5: {
      GetProviders get;
      if (!read_id(reader, get.key)) return DecodeError::kTruncated;
      body = get;
      return std::nullopt;
    }
    case 6: {
      Providers providers;
      if (auto error = read_list(reader, providers.providers)) return error;
      if (auto error = read_list(reader, providers.closer)) return error;
      body = std::move(providers);
      return std::nullopt;
    }
    case 7: {
      AddProvider add;
      if (!read_id(reader, add.key) || !reader.u32(add.ttl_millis)) return DecodeError::kTruncated;
      if (add.ttl_millis == 0 || add.ttl_millis > kProviderTtlMillisMax) return DecodeError::kBadTtl;
      body = add;
      return std::nullopt;
    }
    case 8: {
      uint8_t stored = 0;
      if (!reader.u8(stored)) return DecodeError::kTruncated;
      if (stored > 1) return DecodeError::kBadFlag;
      body = AddProviderAck{stored == 1};
      return std::nullopt;
    }
    default:
      return DecodeError::kUnknownType;
  }
}

}  // namespace

size_t encoded_size(const Message& message) {
  return kHeaderBytes + body_size(message.body);
}

Result<size_t, EncodeError> encode(const Message& message, std::vector<uint8_t>& out) {
  if (auto error = check(message)) return fail(*error);
  const size_t start = out.size();
  ByteWriter writer(out);
  writer.bytes(kMagic);
  writer.u8(kVersion);
  writer.u8(static_cast<uint8_t>(message.body.index() + 1));
  writer.u64(message.transaction_id);
  write_id(writer, message.sender);
  write_body(writer, message.body);
  return out.size() - start;
}

Result<Message, DecodeError> decode(std::span<const uint8_t> datagram) {
  if (datagram.size() > kDatagramBytesMax) return fail(DecodeError::kOversized);
  ByteReader reader(datagram);
  uint8_t magic[2] = {};
  if (!reader.bytes(magic, sizeof magic)) return fail(DecodeError::kTruncated);
  if (magic[0] != kMagic[0] || magic[1] != kMagic[1]) return fail(DecodeError::kBadMagic);
  uint8_t version = 0;
  if (!reader.u8(version)) return fail(DecodeError::kTruncated);
  if (version != kVersion) return fail(DecodeError::kBadVersion);
  uint8_t type = 0;
  Message message;
  if (!reader.u8(type) || !reader.u64(message.transaction_id) || !read_id(reader, message.sender)) {
    return fail(DecodeError::kTruncated);
  }
  if (auto error = read_body(reader, type, message.body)) return fail(*error);
  if (!reader.at_end()) return fail(DecodeError::kTrailingBytes);
  return message;
}

}  // namespace peerd::routing::wire
