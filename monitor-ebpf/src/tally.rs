//! The message counters: requests by method, responses by exact code.

use monitor_common::counters::{Direction, request_index, response_index};
use monitor_ebpf::payload::Payload;

use crate::maps::{REQUESTS, RESPONSES, bump};

#[inline(always)]
pub fn count_message(payload: Payload, direction: Direction) {
    match payload {
        Payload::Request(method) => bump(&REQUESTS, request_index(direction, method)),
        Payload::Response(code) => {
            if let Some(index) = response_index(direction, code) {
                bump(&RESPONSES, index);
            }
        }
        _ => {}
    }
}
