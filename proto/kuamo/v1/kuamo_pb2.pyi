from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttrValue(_message.Message):
    __slots__ = ("string_value", "int_value", "double_value", "bool_value")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    double_value: float
    bool_value: bool
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("id", "title", "description", "category", "brand", "price", "rating", "attributes", "image_ref", "key")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttrValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttrValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    title: str
    description: str
    category: str
    brand: str
    price: float
    rating: float
    attributes: _containers.MessageMap[str, AttrValue]
    image_ref: str
    key: str
    def __init__(self, id: _Optional[int] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[str] = ..., brand: _Optional[str] = ..., price: _Optional[float] = ..., rating: _Optional[float] = ..., attributes: _Optional[_Mapping[str, AttrValue]] = ..., image_ref: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("category_prefix", "brands", "price_min", "price_max", "min_rating", "attributes", "ids", "keys")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttrValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttrValue, _Mapping]] = ...) -> None: ...
    CATEGORY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MIN_FIELD_NUMBER: _ClassVar[int]
    PRICE_MAX_FIELD_NUMBER: _ClassVar[int]
    MIN_RATING_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    category_prefix: str
    brands: _containers.RepeatedScalarFieldContainer[str]
    price_min: float
    price_max: float
    min_rating: float
    attributes: _containers.MessageMap[str, AttrValue]
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, category_prefix: _Optional[str] = ..., brands: _Optional[_Iterable[str]] = ..., price_min: _Optional[float] = ..., price_max: _Optional[float] = ..., min_rating: _Optional[float] = ..., attributes: _Optional[_Mapping[str, AttrValue]] = ..., ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class Modifiers(_message.Message):
    __slots__ = ("rating_factor", "popularity_weight", "popularity_field", "brand_boosts")
    class BrandBoostsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RATING_FACTOR_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_FIELD_FIELD_NUMBER: _ClassVar[int]
    BRAND_BOOSTS_FIELD_NUMBER: _ClassVar[int]
    rating_factor: float
    popularity_weight: float
    popularity_field: str
    brand_boosts: _containers.ScalarMap[str, float]
    def __init__(self, rating_factor: _Optional[float] = ..., popularity_weight: _Optional[float] = ..., popularity_field: _Optional[str] = ..., brand_boosts: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("text", "image", "rating", "price", "targets", "weights", "filters", "modifiers", "k", "nprobe", "rerank_factor", "explain", "omit_products", "user_id", "user_weight", "collapse")
    class TargetsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class WeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MODIFIERS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    RERANK_FACTOR_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    OMIT_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    COLLAPSE_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    rating: float
    price: float
    targets: _containers.ScalarMap[str, float]
    weights: _containers.ScalarMap[str, float]
    filters: Filters
    modifiers: Modifiers
    k: int
    nprobe: int
    rerank_factor: int
    explain: bool
    omit_products: bool
    user_id: str
    user_weight: float
    collapse: str
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., rating: _Optional[float] = ..., price: _Optional[float] = ..., targets: _Optional[_Mapping[str, float]] = ..., weights: _Optional[_Mapping[str, float]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., modifiers: _Optional[_Union[Modifiers, _Mapping]] = ..., k: _Optional[int] = ..., nprobe: _Optional[int] = ..., rerank_factor: _Optional[int] = ..., explain: _Optional[bool] = ..., omit_products: _Optional[bool] = ..., user_id: _Optional[str] = ..., user_weight: _Optional[float] = ..., collapse: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("request_id", "query")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    query: Query
    def __init__(self, request_id: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("contributions", "base_score", "modifiers")
    class ContributionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ModifiersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    BASE_SCORE_FIELD_NUMBER: _ClassVar[int]
    MODIFIERS_FIELD_NUMBER: _ClassVar[int]
    contributions: _containers.ScalarMap[str, float]
    base_score: float
    modifiers: _containers.ScalarMap[str, float]
    def __init__(self, contributions: _Optional[_Mapping[str, float]] = ..., base_score: _Optional[float] = ..., modifiers: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "product", "explanation", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    score: float
    product: Product
    explanation: Explanation
    key: str
    def __init__(self, id: _Optional[int] = ..., score: _Optional[float] = ..., product: _Optional[_Union[Product, _Mapping]] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_ms", "encode_ms", "filter_ms", "search_ms", "rerank_ms", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    FILTER_MS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    RERANK_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    encode_ms: float
    filter_ms: float
    search_ms: float
    rerank_ms: float
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., filter_ms: _Optional[float] = ..., search_ms: _Optional[float] = ..., rerank_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("request_id", "hits", "timings", "allowed", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    timings: Timings
    allowed: int
    error: Error
    def __init__(self, request_id: _Optional[str] = ..., hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., allowed: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "images", "kind")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    kind: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., kind: _Optional[str] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("dim", "vectors")
    DIM_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    dim: int
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    def __init__(self, dim: _Optional[int] = ..., vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ...) -> None: ...

class Example(_message.Message):
    __slots__ = ("id", "weight", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    weight: float
    key: str
    def __init__(self, id: _Optional[int] = ..., weight: _Optional[float] = ..., key: _Optional[str] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("request_id", "user_id", "positives", "negatives", "filters", "modifiers", "k", "explain", "omit_products", "include_purchased")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    NEGATIVES_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MODIFIERS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    OMIT_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PURCHASED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    user_id: str
    positives: _containers.RepeatedCompositeFieldContainer[Example]
    negatives: _containers.RepeatedCompositeFieldContainer[Example]
    filters: Filters
    modifiers: Modifiers
    k: int
    explain: bool
    omit_products: bool
    include_purchased: bool
    def __init__(self, request_id: _Optional[str] = ..., user_id: _Optional[str] = ..., positives: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., negatives: _Optional[_Iterable[_Union[Example, _Mapping]]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., modifiers: _Optional[_Union[Modifiers, _Mapping]] = ..., k: _Optional[int] = ..., explain: _Optional[bool] = ..., omit_products: _Optional[bool] = ..., include_purchased: _Optional[bool] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("user_id", "product_id", "kind", "timestamp", "product_key")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    product_id: int
    kind: str
    timestamp: float
    product_key: str
    def __init__(self, user_id: _Optional[str] = ..., product_id: _Optional[int] = ..., kind: _Optional[str] = ..., timestamp: _Optional[float] = ..., product_key: _Optional[str] = ...) -> None: ...

class RecordEventsResponse(_message.Message):
    __slots__ = ("recorded", "rejected")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    def __init__(self, recorded: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("events_deleted",)
    EVENTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    events_deleted: int
    def __init__(self, events_deleted: _Optional[int] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("product", "image", "image_chunk")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    product: Product
    image: bytes
    image_chunk: bytes
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., image: _Optional[bytes] = ..., image_chunk: _Optional[bytes] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("row", "id", "field", "reason", "key")
    ROW_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    row: int
    id: int
    field: str
    reason: str
    key: str
    def __init__(self, row: _Optional[int] = ..., id: _Optional[int] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("accepted", "rejected", "unchanged", "accepted_keys", "unchanged_keys")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_KEYS_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_KEYS_FIELD_NUMBER: _ClassVar[int]
    accepted: _containers.RepeatedScalarFieldContainer[int]
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    unchanged: _containers.RepeatedScalarFieldContainer[int]
    accepted_keys: _containers.RepeatedScalarFieldContainer[str]
    unchanged_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[_Iterable[int]] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., unchanged: _Optional[_Iterable[int]] = ..., accepted_keys: _Optional[_Iterable[str]] = ..., unchanged_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids", "keys")
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("id", "key")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    id: int
    key: str
    def __init__(self, id: _Optional[int] = ..., key: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("products", "indexed", "store_seq", "index_seq", "details_json")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    INDEXED_FIELD_NUMBER: _ClassVar[int]
    STORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    INDEX_SEQ_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    products: int
    indexed: int
    store_seq: int
    index_seq: int
    details_json: str
    def __init__(self, products: _Optional[int] = ..., indexed: _Optional[int] = ..., store_seq: _Optional[int] = ..., index_seq: _Optional[int] = ..., details_json: _Optional[str] = ...) -> None: ...
