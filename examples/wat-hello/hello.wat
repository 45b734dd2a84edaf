;; The smallest Kelp extension: a core module written by hand against the canonical ABI of
;; alga:extension/runner, turned into a component by `kelp build` (wit-component).
;;
;; handler(execute-request) -> execute-response
;;   The request record is larger than 16 flat values, so the host passes a pointer to it;
;;   the response is returned through a pointer too. Layout of execute-request:
;;     context: request-id option<string> @0, tenant-id @12, extension-id @20,
;;              install-id option<string> @28, version-id option<string> @40
;;     http:    method @52, url (ptr @60, len @64), headers @68, body option<list<u8>> @76
;;   execute-response: status u16 @0, headers (ptr @4, len @8), body option<list<u8>> @12
(module
  (import "alga:extension/logging" "log-info" (func $log_info (param i32 i32)))
  (memory (export "memory") 1)
  ;; Bump allocator: every request gets a fresh instance, so nothing is ever freed.
  (global $heap (mut i32) (i32.const 8192))
  (func $alloc (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
        (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (local.get $ptr))

  (data (i32.const 4096) "hello from wat: ")                 ;; 16 bytes
  (data (i32.const 4160) "content-type")                     ;; 12 bytes
  (data (i32.const 4192) "text/plain; charset=utf-8")        ;; 25 bytes
  (data (i32.const 4240) "wat hello handled a request")      ;; 27 bytes

  (func (export "handler") (param $req i32) (result i32)
    (local $url_ptr i32) (local $url_len i32) (local $body i32)
    (call $log_info (i32.const 4240) (i32.const 27))
    (local.set $url_ptr (i32.load offset=60 (local.get $req)))
    (local.set $url_len (i32.load offset=64 (local.get $req)))
    ;; body = "hello from wat: " + url
    (local.set $body (call $alloc (i32.const 0) (i32.const 0) (i32.const 1) (i32.add (local.get $url_len) (i32.const 16))))
    (memory.copy (local.get $body) (i32.const 4096) (i32.const 16))
    (memory.copy (i32.add (local.get $body) (i32.const 16)) (local.get $url_ptr) (local.get $url_len))
    ;; one header record {name, value} at 2048
    (i32.store (i32.const 2048) (i32.const 4160))
    (i32.store (i32.const 2052) (i32.const 12))
    (i32.store (i32.const 2056) (i32.const 4192))
    (i32.store (i32.const 2060) (i32.const 25))
    ;; the response at 1024
    (i32.store16 (i32.const 1024) (i32.const 200))
    (i32.store (i32.const 1028) (i32.const 2048))
    (i32.store (i32.const 1032) (i32.const 1))
    (i32.store8 (i32.const 1036) (i32.const 1))
    (i32.store (i32.const 1040) (local.get $body))
    (i32.store (i32.const 1044) (i32.add (local.get $url_len) (i32.const 16)))
    (i32.const 1024))
)
