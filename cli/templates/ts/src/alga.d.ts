// Types of the host interfaces this template uses, as componentize-js maps the WIT of
// alga:extension/runner to JavaScript (records → objects with camelCase fields, u64 →
// bigint, option<T> → T | undefined, result<T, E> → T or a thrown error with E in
// `payload`). Add declarations here as you use more interfaces.
declare module 'alga:extension/types' {
  export interface HttpHeader { name: string; value: string }
  export interface HttpRequest { method: string; url: string; headers: HttpHeader[]; body?: Uint8Array }
  export interface ContextData {
    requestId?: string;
    tenantId: string;
    extensionId: string;
    installId?: string;
    versionId?: string;
  }
  export interface ExecuteRequest { context: ContextData; http: HttpRequest }
  export interface ExecuteResponse { status: number; headers: HttpHeader[]; body?: Uint8Array }
}

declare module 'alga:extension/context' {
  import type { ContextData } from 'alga:extension/types';
  export function getContext(): ContextData;
}

declare module 'alga:extension/logging' {
  export function logInfo(message: string): void;
  export function logWarn(message: string): void;
  export function logError(message: string): void;
}

declare module 'alga:extension/storage' {
  export interface StorageEntry { namespace: string; key: string; value: Uint8Array; revision?: bigint }
  export function get(namespace: string, key: string): StorageEntry;
  export function put(entry: StorageEntry): StorageEntry;
  export function delete_(namespace: string, key: string): void;
  export { delete_ as delete };
  export function listEntries(namespace: string, cursor?: string): StorageEntry[];
}
