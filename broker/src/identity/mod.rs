//! Who a meter is: authentication at CONNECT and the rules of what an identity may publish and
//! subscribe to ([`auth`]), and the built-in certificate authority that issues meters' client
//! certificates and the listeners' server certificate ([`ca`]).

pub mod auth;
pub mod ca;
