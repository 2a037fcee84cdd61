//! Generates the enclave service's RPC code from its `.proto` service (a `prost_build`
//! `ServiceGenerator`): method ids, the server trait and its dispatcher, and a blocking and an
//! asynchronous client (host only: feature `std`). Hand-written because no maintained crate
//! generates a `no_std` server trait with numeric method ids for prost (tonic's needs std and
//! HTTP/2; Project Oak's `micro_rpc`, the model for this shape, is not published for reuse).

use std::fmt::Write;

use prost_build::{Method, Service, ServiceGenerator};

/// The generator; `prost_build::Config::service_generator` takes it.
pub struct MicroRpc;

impl ServiceGenerator for MicroRpc {
    fn generate(&mut self, service: Service, buf: &mut String) {
        // Writing to a String cannot fail.
        let _ = generate(&service, buf);
    }
}

fn docs(out: &mut String, indent: &str, lines: &[String]) -> std::fmt::Result {
    for line in lines {
        writeln!(out, "{indent}///{line}")?;
    }
    Ok(())
}

fn generate(s: &Service, out: &mut String) -> std::fmt::Result {
    let name = &s.name;
    let methods = &s.methods;
    method_enum(s, out)?;
    server_trait(s, out)?;
    dispatcher(s, out)?;
    client(s, out, false)?;
    client(s, out, true)?;
    writeln!(
        out,
        "const _: () = assert!({name}Method::ALL.len() == {n});",
        n = methods.len()
    )
}

fn variant(m: &Method) -> &str {
    &m.proto_name
}

fn method_enum(s: &Service, out: &mut String) -> std::fmt::Result {
    let name = &s.name;
    writeln!(
        out,
        "/// The methods of `{name}`, numbered by their 1-based position in the `.proto` service \
         (so new methods go at the end)."
    )?;
    writeln!(
        out,
        "#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]"
    )?;
    writeln!(out, "pub enum {name}Method {{")?;
    for (i, m) in s.methods.iter().enumerate() {
        docs(out, "    ", &m.comments.leading)?;
        writeln!(out, "    {} = {},", variant(m), i + 1)?;
    }
    writeln!(out, "}}\n")?;
    writeln!(out, "impl {name}Method {{")?;
    writeln!(out, "    /// Every method, in order.")?;
    writeln!(out, "    pub const ALL: [{name}Method; {}] = [", s.methods.len())?;
    for m in &s.methods {
        writeln!(out, "        {name}Method::{},", variant(m))?;
    }
    writeln!(out, "    ];\n")?;
    writeln!(out, "    /// The method whose id is `id`.")?;
    writeln!(out, "    pub fn from_id(id: u32) -> Option<Self> {{")?;
    writeln!(out, "        match id {{")?;
    for (i, m) in s.methods.iter().enumerate() {
        writeln!(out, "            {} => Some({name}Method::{}),", i + 1, variant(m))?;
    }
    writeln!(out, "            _ => None,\n        }}\n    }}\n")?;
    writeln!(out, "    /// Its id on the wire (`Frame.method_id`).")?;
    writeln!(
        out,
        "    pub const fn id(self) -> u32 {{\n        self as u32\n    }}\n"
    )?;
    writeln!(out, "    /// Its name in the `.proto` file.")?;
    writeln!(
        out,
        "    pub const fn name(self) -> &'static str {{\n        match self {{"
    )?;
    for m in &s.methods {
        writeln!(out, "            {name}Method::{v} => \"{v}\",", v = variant(m))?;
    }
    writeln!(out, "        }}\n    }}\n}}\n")
}

fn server_trait(s: &Service, out: &mut String) -> std::fmt::Result {
    let name = &s.name;
    docs(out, "", &s.comments.leading)?;
    writeln!(
        out,
        "///\n/// The server side, which the implementation provides; [`dispatch_{snake}`] decodes each \
         request once and calls the method.",
        snake = snake(name)
    )?;
    writeln!(out, "pub trait {name}Server {{")?;
    writeln!(
        out,
        "    /// What the implementation keeps per call (e.g. the time it runs at, the audit records it makes)."
    )?;
    writeln!(out, "    type Context;\n")?;
    for m in &s.methods {
        docs(out, "    ", &m.comments.leading)?;
        writeln!(
            out,
            "    fn {}(&mut self, ctx: &mut Self::Context, request: {}) -> Result<{}, crate::rpc::RpcError>;\n",
            m.name, m.input_type, m.output_type
        )?;
    }
    writeln!(out, "}}\n")
}

fn dispatcher(s: &Service, out: &mut String) -> std::fmt::Result {
    let name = &s.name;
    writeln!(
        out,
        "/// Decodes `payload` as the request of `method` (the only decode of it) and answers it with \
         `server`: the encoded reply, or the call's error."
    )?;
    writeln!(
        out,
        "pub fn dispatch_{snake}<S: {name}Server + ?Sized>(server: &mut S, ctx: &mut S::Context, method: {name}Method, \
         payload: &[u8]) -> Result<alloc::vec::Vec<u8>, crate::rpc::RpcError> {{",
        snake = snake(name)
    )?;
    writeln!(out, "    use prost::Message as _;\n    match method {{")?;
    for m in &s.methods {
        writeln!(out, "        {name}Method::{} => {{", variant(m))?;
        writeln!(
            out,
            "            let request = {input}::decode(payload).map_err(|_| crate::rpc::RpcError::malformed(\"{input}\"))?;",
            input = m.input_type
        )?;
        writeln!(
            out,
            "            server.{}(ctx, request).map(|reply| reply.encode_to_vec())",
            m.name
        )?;
        writeln!(out, "        }}")?;
    }
    writeln!(out, "    }}\n}}\n")
}

fn client(s: &Service, out: &mut String, asynchronous: bool) -> std::fmt::Result {
    let name = &s.name;
    let (ty, bound, recv, awaited, kind) = if asynchronous {
        (
            "Async",
            "crate::rpc::AsyncTransport + Sync",
            "&self",
            ".await",
            "an asynchronous",
        )
    } else {
        ("", "crate::rpc::Transport", "&mut self", "", "a blocking")
    };
    // Clients are for the host: the enclave, which only serves, is built without them.
    writeln!(out, "/// A client of `{name}` over {kind} transport.")?;
    writeln!(out, "#[cfg(feature = \"std\")]")?;
    writeln!(out, "#[derive(Debug, Clone)]")?;
    writeln!(out, "pub struct {ty}{name}Client<T> {{\n    transport: T,\n}}\n")?;
    writeln!(out, "#[cfg(feature = \"std\")]")?;
    writeln!(out, "impl<T: {bound}> {ty}{name}Client<T> {{")?;
    writeln!(out, "    /// A client over `transport`.")?;
    writeln!(
        out,
        "    pub fn new(transport: T) -> Self {{\n        Self {{ transport }}\n    }}\n"
    )?;
    writeln!(out, "    /// Its transport.")?;
    writeln!(
        out,
        "    pub fn transport(&self) -> &T {{\n        &self.transport\n    }}\n"
    )?;
    writeln!(out, "    /// Its transport, to change.")?;
    writeln!(
        out,
        "    pub fn transport_mut(&mut self) -> &mut T {{\n        &mut self.transport\n    }}\n"
    )?;
    for m in &s.methods {
        docs(out, "    ", &m.comments.leading)?;
        let prefix = if asynchronous { "pub async fn" } else { "pub fn" };
        writeln!(
            out,
            "    {prefix} {}({recv}, request: &{}) -> Result<{}, T::Error> {{",
            m.name, m.input_type, m.output_type
        )?;
        writeln!(out, "        use prost::Message as _;")?;
        writeln!(
            out,
            "        let reply = self.transport.call({name}Method::{}.id(), request.encode_to_vec()){awaited}?;",
            variant(m)
        )?;
        writeln!(
            out,
            "        {output}::decode(reply.as_slice()).map_err(|_| crate::rpc::RpcError::bad_reply(\"{output}\").into())",
            output = m.output_type
        )?;
        writeln!(out, "    }}\n")?;
    }
    writeln!(out, "}}\n")
}

/// `EnclaveService` -> `enclave_service`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
