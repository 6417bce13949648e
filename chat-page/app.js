// The chat page: a Telegram-like view of the sandbox's chats, built from the page server's events
// (/api/events), and a composer that sends text and files through the emulator as a user would.
import { renderTelegramHtml } from './telegram-html.js'

const TYPING_SHOWN_MS = 5000
const PAGE_HEADER = { 'x-chat-page': '1' }
// The service's log messages, as the timeline says them.
const LOG_LABELS = {
  'message accepted': () => 'received by the service',
  'answered by the service': (f) => `answered by the service (${f.kind ?? 'command'})`,
  'child started': (f) => `brain started (attempt ${f.attempt ?? 1}, pid ${f.child_pid ?? '?'})`,
  'child reaped': (f) => reapedLabel(f),
  'reply sent': (f) => `reply sent (${f.chars ?? '?'} characters)`,
  'brain file sent': (f) => `file sent: ${f.file} (${f.kind})`,
  'brain file refused': (f) => `file refused: ${f.reason}`,
  'brain asked for a retry (exit 75)': (f) => `brain asked for a retry; next in ${f.backoff_ms} ms`,
}

const state = {
  chats: [],
  about: {},
  messages: new Map(), // chatId → Map(messageId → message)
  updates: new Map(), // updateId → { chatId, messageId, sentAt, entries: [{at, label, level}], stderr: [] }
  typingUntil: new Map(),
  chatId: undefined,
  senders: new Map(), // chatId → user id
  selected: undefined, // updateId shown in the timeline
}

const $ = (id) => document.getElementById(id)
let renderQueued = false
// Whether the list follows new messages: true unless the user scrolled up to read.
let followLatest = true

function scheduleRender() {
  if (renderQueued) return
  renderQueued = true
  requestAnimationFrame(() => {
    renderQueued = false
    render()
  })
}

function reset({ chats, about }) {
  state.chats = chats
  state.about = about
  state.messages = new Map(chats.map((chat) => [chat.id, new Map()]))
  state.updates = new Map()
  state.typingUntil = new Map()
  state.chatId ??= chats[0]?.id
  for (const chat of chats) if (!state.senders.has(chat.id)) state.senders.set(chat.id, chat.users[0]?.id)
  renderChats()
  renderAbout()
}

function apply(event) {
  const chat = state.messages.get(event.message?.chatId ?? event.chatId)
  switch (event.type) {
    case 'message': {
      const message = { ...event.message, reaction: null }
      chat?.set(message.messageId, message)
      if (message.updateId !== undefined) {
        const update = timelineOf(message.updateId)
        Object.assign(update, { chatId: message.chatId, messageId: message.messageId, sentAt: event.at })
        update.entries.unshift({ at: event.at, label: 'sent' })
        state.selected = message.updateId
      } else if (message.from.isBot) {
        // The bot's next message ends "typing…", as in Telegram.
        state.typingUntil.delete(message.chatId)
        const answered = updateOfMessage(message.chatId, message.replyTo)
        if (answered) answered.entries.push({ at: event.at, label: message.photo ? 'photo from the bot' : message.document ? `file from the bot: ${message.document.name}` : 'message from the bot' })
      }
      break
    }
    case 'edit': {
      const message = chat?.get(event.messageId)
      if (message) Object.assign(message, { text: event.text, html: event.html, edited: true })
      break
    }
    case 'delete':
      chat?.delete(event.messageId)
      break
    case 'reaction': {
      const message = chat?.get(event.messageId)
      if (message) message.reaction = event.emoji
      const update = updateOfMessage(event.chatId, event.messageId)
      if (update) update.entries.push({ at: event.at, label: event.emoji ? `reaction ${event.emoji}` : 'reaction removed' })
      break
    }
    case 'typing':
      state.typingUntil.set(event.chatId, event.at + TYPING_SHOWN_MS)
      break
    case 'log': {
      const update = timelineOf(event.updateId)
      const label = (LOG_LABELS[event.msg] ?? (() => event.msg))(event.fields)
      update.entries.push({ at: event.at, label, level: event.level })
      if (event.fields.stderr_last) update.stderr.push(event.fields.stderr_last)
      break
    }
  }
}

function timelineOf(updateId) {
  let update = state.updates.get(updateId)
  if (!update) {
    update = { chatId: undefined, messageId: undefined, sentAt: undefined, entries: [], stderr: [] }
    state.updates.set(updateId, update)
  }
  return update
}

function updateOfMessage(chatId, messageId) {
  if (messageId === undefined) return undefined
  for (const update of state.updates.values()) if (update.chatId === chatId && update.messageId === messageId) return update
  return undefined
}

function reapedLabel(f) {
  const how = f.outcome === 'timed_out' ? 'timed out' : f.exit_code !== null && f.exit_code !== undefined ? `exited ${f.exit_code}` : `was killed by ${f.signal ?? 'a signal'}`
  return `brain ${how} after ${f.duration_ms} ms`
}

// ---- rendering ----

function renderChats() {
  const nav = $('chats')
  nav.replaceChildren(
    ...state.chats.map((chat) => {
      const button = document.createElement('button')
      button.type = 'button'
      button.textContent = chat.type === 'private' ? `${chat.title} (private)` : chat.title
      button.setAttribute('aria-pressed', String(chat.id === state.chatId))
      button.addEventListener('click', () => {
        state.chatId = chat.id
        followLatest = true
        renderChats()
        render()
      })
      return button
    }),
  )
}

function renderAbout() {
  $('about').replaceChildren(
    ...Object.entries(state.about).flatMap(([name, value]) => {
      const term = document.createElement('dt')
      term.textContent = name
      const detail = document.createElement('dd')
      detail.textContent = value
      return [term, detail]
    }),
  )
}

function render() {
  const chat = state.chats.find((candidate) => candidate.id === state.chatId)
  if (!chat) return
  $('chat-title').textContent = chat.type === 'private' ? `${chat.title} ↔ bot` : `${chat.title} (${chat.users.length} people and the bot)`
  renderSender(chat)
  renderMessages(chat)
  renderTyping()
  renderTimeline()
}

function renderSender(chat) {
  const field = $('sender-field')
  field.hidden = chat.users.length < 2
  const select = $('sender')
  const current = state.senders.get(chat.id)
  select.replaceChildren(
    ...chat.users.map((user) => {
      const option = document.createElement('option')
      option.value = String(user.id)
      option.textContent = user.firstName
      option.selected = user.id === current
      return option
    }),
  )
}

function renderMessages(chat) {
  const list = $('messages')
  const messages = [...(state.messages.get(chat.id)?.values() ?? [])].sort((a, b) => a.messageId - b.messageId)
  list.replaceChildren(...messages.map((message) => messageItem(message, chat)))
  scrollToLatest()
}

function scrollToLatest() {
  const list = $('messages')
  if (followLatest) list.scrollTop = list.scrollHeight
}

function messageItem(message, chat) {
  const item = document.createElement('li')
  const mine = !message.from.isBot
  item.className = `message ${mine ? 'from-user' : 'from-bot'}`
  item.dataset.messageId = String(message.messageId)
  if (message.updateId !== undefined) {
    item.dataset.updateId = String(message.updateId)
    if (message.updateId === state.selected) item.classList.add('selected')
  }
  const bubble = document.createElement('div')
  bubble.className = 'bubble'
  // As in Telegram: names in groups only.
  if (chat.type !== 'private') {
    const who = document.createElement('span')
    who.className = 'who'
    who.textContent = message.from.name
    bubble.append(who)
  }
  if (message.photo) {
    const image = document.createElement('img')
    image.src = message.photo.url
    image.alt = mine ? 'your photo' : 'photo from the bot'
    image.className = 'photo'
    // A photo grows the list once loaded: stay with the latest message.
    image.addEventListener('load', scrollToLatest)
    bubble.append(image)
  }
  if (message.document) {
    const link = document.createElement('a')
    link.href = message.document.url
    link.download = message.document.name
    link.className = 'document'
    link.textContent = `📄 ${message.document.name} (${formatSize(message.document.size)})`
    bubble.append(link)
  }
  if (message.text !== undefined) {
    const text = document.createElement('div')
    text.className = 'text'
    text.append(message.html !== undefined ? renderTelegramHtml(message.html) : document.createTextNode(message.text))
    bubble.append(text)
  }
  const meta = document.createElement('span')
  meta.className = 'meta'
  meta.textContent = `${message.edited ? 'edited ' : ''}${new Date(message.date * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}`
  bubble.append(meta)
  item.append(bubble)
  if (message.reaction) {
    const reaction = document.createElement('span')
    reaction.className = 'reaction'
    reaction.textContent = message.reaction
    reaction.setAttribute('aria-label', `reaction ${message.reaction}`)
    bubble.append(reaction)
  }
  const updateId = message.updateId ?? updateIdOf(message.chatId, message.replyTo)
  if (updateId !== undefined) {
    item.addEventListener('click', () => {
      state.selected = updateId
      render()
    })
  }
  return item
}

function updateIdOf(chatId, messageId) {
  for (const [updateId, update] of state.updates) if (update.chatId === chatId && update.messageId === messageId) return updateId
  return undefined
}

function renderTyping() {
  const until = state.typingUntil.get(state.chatId) ?? 0
  const typing = $('typing')
  const text = until > Date.now() ? 'bot is typing…' : ''
  if (typing.textContent !== text) typing.textContent = text
}

function renderTimeline() {
  const update = state.updates.get(state.selected)
  $('timeline-hint').hidden = update !== undefined
  const entries = $('timeline-entries')
  if (!update) {
    entries.replaceChildren()
    return
  }
  const origin = update.sentAt ?? update.entries[0]?.at ?? 0
  entries.replaceChildren(
    ...[...update.entries].sort((a, b) => a.at - b.at).map((entry) => {
      const item = document.createElement('li')
      if (entry.level >= 40) item.className = 'warn'
      const time = document.createElement('span')
      time.className = 'at'
      time.textContent = `+${Math.max(0, entry.at - origin)} ms`
      item.append(time, ` ${entry.label}`)
      return item
    }),
  )
  $('stderr').textContent = update.stderr.length > 0 ? update.stderr.join('\n') : '(nothing)'
}

function formatSize(bytes) {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`
}

// ---- sending ----

function showError(text) {
  const error = $('error')
  error.textContent = text
  error.hidden = text === ''
}

async function post(url, init) {
  const response = await fetch(url, { method: 'POST', ...init, headers: { ...PAGE_HEADER, ...init.headers } })
  if (!response.ok) throw new Error((await response.json().catch(() => ({}))).error ?? `HTTP ${response.status}`)
}

async function sendText() {
  followLatest = true
  const box = $('message')
  const text = box.value
  if (text.trim() === '') return
  box.value = ''
  try {
    await post('/api/messages', {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ chatId: state.chatId, fromId: state.senders.get(state.chatId), text }),
    })
    showError('')
  } catch (error) {
    box.value = text
    showError(`not sent: ${error.message}`)
  }
}

async function sendFile(file) {
  followLatest = true
  const box = $('message')
  const query = new URLSearchParams({ chatId: String(state.chatId), fromId: String(state.senders.get(state.chatId)), name: file.name, caption: box.value })
  try {
    await post(`/api/uploads?${query}`, { headers: { 'content-type': file.type || 'application/octet-stream' }, body: file })
    box.value = ''
    showError('')
  } catch (error) {
    showError(`${file.name} not sent: ${error.message}`)
  }
}

function wire() {
  $('messages').addEventListener('scroll', () => {
    const list = $('messages')
    followLatest = list.scrollHeight - list.scrollTop - list.clientHeight < 80
  })
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault()
    void sendText()
  })
  $('message').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault()
      void sendText()
    }
  })
  $('file').addEventListener('change', (event) => {
    const [file] = event.target.files
    event.target.value = ''
    if (file) void sendFile(file)
  })
  $('sender').addEventListener('change', (event) => {
    state.senders.set(state.chatId, Number(event.target.value))
  })
  $('timeline-toggle').addEventListener('click', () => {
    const open = document.body.classList.toggle('timeline-open')
    $('timeline-toggle').setAttribute('aria-expanded', String(open))
  })
  setInterval(renderTyping, 500)
  window.addEventListener('resize', scrollToLatest)

  const events = new EventSource('/api/events')
  events.addEventListener('reset', (event) => {
    reset(JSON.parse(event.data))
    scheduleRender()
    document.body.dataset.ready = 'true'
  })
  events.addEventListener('page', (event) => {
    apply(JSON.parse(event.data))
    scheduleRender()
  })
  events.addEventListener('error', () => showError('lost the connection to the sandbox; retrying…'))
  events.addEventListener('open', () => showError(''))
}

wire()
