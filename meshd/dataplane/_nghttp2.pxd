# The slice of libnghttp2's C API (nghttp2/nghttp2.h, 1.52) that the forwarding engine uses.
from libc.stdint cimport int32_t, uint8_t, uint32_t


cdef extern from "nghttp2/nghttp2.h":
    ctypedef struct nghttp2_session:
        pass
    ctypedef struct nghttp2_session_callbacks:
        pass
    ctypedef struct nghttp2_option:
        pass

    ctypedef struct nghttp2_nv:
        uint8_t *name
        uint8_t *value
        size_t namelen
        size_t valuelen
        uint8_t flags

    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags

    ctypedef union nghttp2_data_source:
        int fd
        void *ptr

    ctypedef ssize_t (*nghttp2_data_source_read_callback)(
        nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
        uint32_t *data_flags, nghttp2_data_source *source, void *user_data)

    ctypedef struct nghttp2_data_provider:
        nghttp2_data_source source
        nghttp2_data_source_read_callback read_callback

    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_RESPONSE
        NGHTTP2_HCAT_PUSH_RESPONSE
        NGHTTP2_HCAT_HEADERS

    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_nv *nva
        size_t nvlen
        nghttp2_headers_category cat

    ctypedef struct nghttp2_rst_stream:
        nghttp2_frame_hd hd
        uint32_t error_code

    ctypedef struct nghttp2_goaway:
        nghttp2_frame_hd hd
        int32_t last_stream_id
        uint32_t error_code

    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
        nghttp2_rst_stream rst_stream
        nghttp2_goaway goaway

    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    enum:
        NGHTTP2_DATA = 0
        NGHTTP2_HEADERS = 1
        NGHTTP2_RST_STREAM = 3
        NGHTTP2_SETTINGS = 4
        NGHTTP2_GOAWAY = 7

        NGHTTP2_FLAG_NONE = 0
        NGHTTP2_FLAG_END_STREAM = 0x01
        NGHTTP2_FLAG_ACK = 0x01
        NGHTTP2_FLAG_END_HEADERS = 0x04

        NGHTTP2_NV_FLAG_NONE = 0
        NGHTTP2_NV_FLAG_NO_INDEX = 0x01

        NGHTTP2_DATA_FLAG_NONE = 0
        NGHTTP2_DATA_FLAG_EOF = 0x01
        NGHTTP2_DATA_FLAG_NO_END_STREAM = 0x02

        NGHTTP2_SETTINGS_HEADER_TABLE_SIZE = 0x01
        NGHTTP2_SETTINGS_ENABLE_PUSH = 0x02
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS = 0x03
        NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE = 0x04
        NGHTTP2_SETTINGS_MAX_FRAME_SIZE = 0x05
        NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE = 0x06

        NGHTTP2_NO_ERROR = 0
        NGHTTP2_PROTOCOL_ERROR = 1
        NGHTTP2_INTERNAL_ERROR = 2
        NGHTTP2_FLOW_CONTROL_ERROR = 3
        NGHTTP2_REFUSED_STREAM = 7
        NGHTTP2_CANCEL = 8
        NGHTTP2_ENHANCE_YOUR_CALM = 11

        NGHTTP2_ERR_DEFERRED = -508
        NGHTTP2_ERR_CALLBACK_FAILURE = -902
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE = -521
        NGHTTP2_ERR_STREAM_CLOSED = -510

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks **cbs)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks *cbs)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_frame_send_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, void *) noexcept)
    void nghttp2_session_callbacks_set_on_header_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, const nghttp2_frame *, const uint8_t *, size_t,
                  const uint8_t *, size_t, uint8_t, void *) noexcept)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, uint8_t, int32_t, const uint8_t *, size_t, void *) noexcept)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks *cbs,
        int (*cb)(nghttp2_session *, int32_t, uint32_t, void *) noexcept)

    int nghttp2_option_new(nghttp2_option **opt)
    void nghttp2_option_del(nghttp2_option *opt)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option *opt, int val)
    void nghttp2_option_set_peer_max_concurrent_streams(nghttp2_option *opt, uint32_t val)
    void nghttp2_option_set_max_send_header_block_length(nghttp2_option *opt, size_t val)
    void nghttp2_option_set_max_deflate_dynamic_table_size(nghttp2_option *opt, size_t val)
    void nghttp2_option_set_max_outbound_ack(nghttp2_option *opt, size_t val)
    void nghttp2_option_set_max_settings(nghttp2_option *opt, size_t val)
    void nghttp2_option_set_max_reserved_remote_streams(nghttp2_option *opt, uint32_t val)
    void nghttp2_option_set_no_closed_streams(nghttp2_option *opt, int val)

    int nghttp2_session_server_new2(nghttp2_session **s, const nghttp2_session_callbacks *cbs,
                                    void *user_data, const nghttp2_option *opt)
    int nghttp2_session_client_new2(nghttp2_session **s, const nghttp2_session_callbacks *cbs,
                                    void *user_data, const nghttp2_option *opt)
    void nghttp2_session_del(nghttp2_session *s)

    ssize_t nghttp2_session_mem_recv(nghttp2_session *s, const uint8_t *data, size_t n)
    ssize_t nghttp2_session_mem_send(nghttp2_session *s, const uint8_t **data)
    int nghttp2_session_want_read(nghttp2_session *s)
    int nghttp2_session_want_write(nghttp2_session *s)

    void *nghttp2_session_get_stream_user_data(nghttp2_session *s, int32_t sid)
    int nghttp2_session_set_stream_user_data(nghttp2_session *s, int32_t sid, void *data)
    int nghttp2_session_consume(nghttp2_session *s, int32_t sid, size_t size)
    int nghttp2_session_consume_connection(nghttp2_session *s, size_t size)
    int nghttp2_session_consume_stream(nghttp2_session *s, int32_t sid, size_t size)
    int nghttp2_session_resume_data(nghttp2_session *s, int32_t sid)
    int nghttp2_session_set_local_window_size(nghttp2_session *s, uint8_t flags, int32_t sid,
                                              int32_t size)
    uint32_t nghttp2_session_get_remote_settings(nghttp2_session *s, int id)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *s)

    int nghttp2_submit_settings(nghttp2_session *s, uint8_t flags,
                                const nghttp2_settings_entry *iv, size_t niv)
    int32_t nghttp2_submit_request(nghttp2_session *s, const void *pri_spec,
                                   const nghttp2_nv *nva, size_t nvlen,
                                   const nghttp2_data_provider *prd, void *stream_user_data)
    int nghttp2_submit_response(nghttp2_session *s, int32_t sid, const nghttp2_nv *nva,
                                size_t nvlen, const nghttp2_data_provider *prd)
    int nghttp2_submit_trailer(nghttp2_session *s, int32_t sid, const nghttp2_nv *nva,
                               size_t nvlen)
    int nghttp2_submit_rst_stream(nghttp2_session *s, uint8_t flags, int32_t sid,
                                  uint32_t error_code)
    int nghttp2_submit_ping(nghttp2_session *s, uint8_t flags, const uint8_t *opaque_data)
    int nghttp2_submit_goaway(nghttp2_session *s, uint8_t flags, int32_t last_sid,
                              uint32_t error_code, const uint8_t *opaque, size_t n)
    int nghttp2_submit_shutdown_notice(nghttp2_session *s)

    const char *nghttp2_strerror(int err)
    const char *nghttp2_http2_strerror(uint32_t code)
