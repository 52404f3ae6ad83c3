//! Which bucket a request names by its `Host` header: virtual-hosted-style
//! addressing (`<bucket>.<domain>`, as SDKs send by default) under the one
//! domain the endpoint is configured for (`[api].aws_domain`), and
//! path-style (`/<bucket>/<key>`) on every other host, IP addresses
//! included.
//!
//! s3s's own `SingleDomain` treats any unknown host as a bucket name (S3's
//! CNAME addressing) and keeps the port in the comparison, so
//! `127.0.0.1:8444` would be read as a bucket; Mayfly has no CNAME buckets,
//! so an unknown host means path-style.

use s3s::S3Result;
use s3s::host::{S3Host, VirtualHost};

/// The endpoint's domain for virtual-hosted-style requests.
#[derive(Debug, Clone)]
pub struct EndpointDomain {
    domain: String,
}

impl EndpointDomain {
    /// `domain` is a DNS name without port, e.g. `localhost` or `s3.example.org`.
    pub fn new(domain: &str) -> EndpointDomain {
        EndpointDomain { domain: domain.to_ascii_lowercase() }
    }

    /// The bucket a `Host` header names, if it names one.
    pub fn bucket_of<'a>(&self, host: &'a str) -> Option<&'a str> {
        // Mayfly's bucket names hold no dots, so the bucket is the first label.
        let (bucket, domain) = strip_port(host).split_once('.')?;
        (!bucket.is_empty() && domain.eq_ignore_ascii_case(&self.domain)).then_some(bucket)
    }
}

/// `host:port` or `[v6]:port` without its port.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|byte| byte.is_ascii_digit()) => name,
        _ => host,
    }
}

impl S3Host for EndpointDomain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some(bucket) => VirtualHost::new(self.domain.as_str()).with_bucket(bucket),
            None => VirtualHost::new(strip_port(host)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_named_only_by_a_label_under_the_domain() {
        let domain = EndpointDomain::new("s3.example.org");
        assert_eq!(domain.bucket_of("inbox.s3.example.org:8444"), Some("inbox"));
        assert_eq!(domain.bucket_of("inbox.s3.example.org"), Some("inbox"));
        assert_eq!(domain.bucket_of("s3.example.org:8444"), None);
        assert_eq!(domain.bucket_of("127.0.0.1:8444"), None);
        assert_eq!(domain.bucket_of("[::1]:8444"), None);
        assert_eq!(domain.bucket_of("inboxs3.example.org"), None);
        assert_eq!(domain.bucket_of("inbox.other.org"), None);
        assert_eq!(EndpointDomain::new("localhost").bucket_of("logs.localhost:9000"), Some("logs"));
    }
}
