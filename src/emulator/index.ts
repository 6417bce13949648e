export { BotApiEmulator, startEmulator, DEFAULT_DELIVERY_RETRY_MS, DEFAULT_DELIVERY_TIMEOUT_MS } from './emulator.js'
export type { EmulatorOptions, ListenOptions, RecordedCall } from './emulator.js'
export type {
  AudioMessageOptions,
  DocumentMessageOptions,
  FileMessageOptions,
  GroupMigrationOptions,
  IncomingMessageOptions,
  MediaMessageOptions,
  MessageEditOptions,
  PhotoMessageOptions,
  TextMessageOptions,
  VideoMessageOptions,
  VideoNoteMessageOptions,
  VoiceMessageOptions,
} from './builders.js'
export type { ChatSettings } from './chats.js'
export type { DeliveryAttempt } from './delivery.js'
export type { Fault, FaultOptions } from './faults.js'
export { MAX_DOWNLOAD_SIZE, type EmulatedFile } from './files.js'
export { parseTelegramHtml, EntityParseError, type FormattedText } from './html-entities.js'
export { MAX_MESSAGE_TEXT_LENGTH } from './message-text.js'
export { CHAT_ACTIONS, DEFAULT_MAX_CONNECTIONS } from './methods.js'
export type { WaitOptions } from './recorder.js'
export { DEFAULT_EXCLUDED_UPDATE_KINDS, type NewUpdate } from './updates.js'
