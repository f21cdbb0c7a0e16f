//! The HTTP side of an upgrade, shared by the server and both transports: header lists,
//! subprotocol negotiation, plain-text refusals.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

/// The first protocol the client offers that the server supports.
pub fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    offered.iter().find_map(|o| {
        supported
            .iter()
            .find(|s| s.eq_ignore_ascii_case(o))
            .copied()
    })
}

/// Every value of header `name`, comma-separated lists split.
pub fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// A plain-text answer: a refusal with `status`, its reason in the body.
pub fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
