//! Certificates made at test time with rcgen: a CA, and leaves it signs.
// Each test file uses its own part of this module.
#![allow(dead_code)]

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rpc_core::tls::{CertificateDer, Identity, PrivateKeyDer};

/// A certificate authority that signs leaves for tests.
pub(crate) struct TestCa {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A fresh self-signed CA named `name`.
    pub(crate) fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key).expect("self-signed CA");
        TestCa { certificate, key }
    }

    /// The CA's certificate, for the other side's trust roots.
    pub(crate) fn roots(&self) -> Vec<CertificateDer<'static>> {
        vec![self.certificate.der().clone()]
    }

    /// The CA's certificate as PEM.
    pub(crate) fn pem(&self) -> String {
        self.certificate.pem()
    }

    /// A server identity valid for `names` (DNS names or IP addresses).
    pub(crate) fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth, "test server")
    }

    /// A client identity named `name`.
    pub(crate) fn client(&self, name: &str) -> Leaf {
        self.leaf(&[], ExtendedKeyUsagePurpose::ClientAuth, name)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, common_name: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.extended_key_usages = vec![usage];
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("signed leaf");
        Leaf { certificate, key }
    }
}

/// A certificate signed by a [`TestCa`], with its key.
pub(crate) struct Leaf {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl Leaf {
    /// The identity from DER.
    pub(crate) fn identity(&self) -> Identity {
        Identity::new(
            vec![self.certificate.der().clone()],
            PrivateKeyDer::try_from(self.key.serialize_der()).expect("PKCS#8 key"),
        )
    }

    /// The identity as PEM: certificate, key.
    pub(crate) fn pem(&self) -> (String, String) {
        (self.certificate.pem(), self.key.serialize_pem())
    }

    /// The certificate in DER.
    pub(crate) fn der(&self) -> &CertificateDer<'static> {
        self.certificate.der()
    }
}

impl Leaf {
    /// The private key alone, in DER.
    pub(crate) fn identity_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key.serialize_der()).expect("PKCS#8 key")
    }
}
