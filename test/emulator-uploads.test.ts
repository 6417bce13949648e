// The emulator's side of files a bot sends: multipart uploads to sendPhoto and sendDocument, kept
// for getFile and the file server as Telegram keeps them; and the image probe both sides use.
import t from 'tap'
import { Api, GrammyError, InputFile } from 'grammy'
import type { Message } from 'grammy/types'
import { startEmulator } from '../src/emulator/index.js'
import { fitsAsPhoto, imageInfo, PHOTO_LIMITS } from '../src/telegram/image-size.js'
import { solidPng } from './helpers/png.js'

const TOKEN = '123456:UPLOAD-token'

t.test('sendPhoto and sendDocument take multipart uploads; the files are kept for getFile and download', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const api = new Api(TOKEN, { apiRoot: emu.url })
  const chat = emu.addChat({ id: 77, type: 'private' })
  const png = solidPng(30, 20)

  const photo = await api.sendPhoto(chat.id, new InputFile(png, 'dot.png'), { caption: 'a <b>dot</b>', parse_mode: 'HTML' })
  t.match(photo, { chat: { id: 77 }, from: { is_bot: true }, caption: 'a dot', caption_entities: [{ type: 'bold', offset: 2, length: 3 }] })
  t.match(photo.photo?.at(-1), { width: 30, height: 20, file_size: png.length })
  const file = await api.getFile(photo.photo?.at(-1)?.file_id ?? '')
  const downloaded = Buffer.from(await (await fetch(`${emu.url}/file/bot${TOKEN}/${file.file_path}`)).arrayBuffer())
  t.ok(downloaded.equals(png), 'the file server has the uploaded bytes')
  t.match(JSON.parse(JSON.stringify(emu.callsOf('sendPhoto')[0]?.params)), { photo: /^attach:\/\//u }, 'the call is recorded')
  t.notMatch(JSON.stringify(emu.calls), /"type":"Buffer"/u, 'uploads are recorded by name and size, never their bytes')

  const document = await api.sendDocument(chat.id, new InputFile(Buffer.from('a,b\n1,2\n'), 'table.csv'), { reply_parameters: { message_id: photo.message_id } })
  t.match(document, { document: { file_name: 'table.csv', file_size: 8 }, reply_to_message: { message_id: photo.message_id } })
  t.ok(emu.file(document.document?.file_id ?? '')?.bytes.equals(Buffer.from('a,b\n1,2\n')))

  const again: Message = await api.sendPhoto(chat.id, photo.photo?.at(-1)?.file_id ?? '')
  t.ok(emu.file(again.photo?.at(-1)?.file_id ?? '')?.bytes.equals(png), 'a file_id is sent again')
})

t.test('what Telegram refuses: not an image as a photo, a caption too long, no file', async (t) => {
  const emu = await startEmulator({ token: TOKEN })
  t.teardown(() => emu.close())
  const api = new Api(TOKEN, { apiRoot: emu.url })
  emu.addChat({ id: 78, type: 'private' })
  const refusal = (call: Promise<unknown>): Promise<string> =>
    call.then(
      () => 'accepted',
      (error: unknown) => (error instanceof GrammyError ? `${error.error_code} ${error.description}` : String(error)),
    )
  t.equal(await refusal(api.sendPhoto(78, new InputFile(Buffer.from('not an image'), 'x.png'))), '400 Bad Request: IMAGE_PROCESS_FAILED')
  t.equal(await refusal(api.sendDocument(78, new InputFile(solidPng(2, 2), 'x.png'), { caption: 'x'.repeat(1025) })), '400 Bad Request: message caption is too long')
  t.equal(await refusal(api.sendDocument(78, 'no-such-file-id')), "400 Bad Request: wrong remote file identifier specified: can't unserialize it. Wrong last symbol?")
  t.equal(await refusal(api.sendDocument(78, new InputFile(Buffer.alloc(0), 'empty.txt'))), '400 Bad Request: file must be non-empty')
})

t.test('imageInfo reads JPEG, PNG and WebP sizes; fitsAsPhoto applies sendPhoto limits', async (t) => {
  t.match(imageInfo(solidPng(640, 480)), { format: 'png', mimeType: 'image/png', width: 640, height: 480 })
  // SOI, an APP0 segment, then SOF0 with height 300 and width 400.
  const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x01, 0x2c, 0x01, 0x90, 0x03, 0, 0, 0, 0, 0, 0])
  t.match(imageInfo(jpeg), { format: 'jpeg', mimeType: 'image/jpeg', width: 400, height: 300 })
  const webp = Buffer.alloc(30)
  webp.write('RIFF', 0, 'latin1')
  webp.write('WEBPVP8X', 8, 'latin1')
  webp.writeUIntLE(1023, 24, 3)
  webp.writeUIntLE(767, 27, 3)
  t.match(imageInfo(webp), { format: 'webp', width: 1024, height: 768 })
  t.equal(imageInfo(Buffer.from('GIF89a……')), undefined, 'a GIF is not a photo')
  t.equal(imageInfo(Buffer.from([0xff, 0xd8])), undefined, 'a truncated JPEG is not either')

  const info = imageInfo(solidPng(100, 100))
  t.ok(info && fitsAsPhoto(info, 1000))
  t.notOk(info && fitsAsPhoto(info, PHOTO_LIMITS.maxBytes + 1), 'over 10 MB')
  t.notOk(fitsAsPhoto({ format: 'png', mimeType: 'image/png', width: 2100, height: 100 }, 1000), 'past 20:1')
  t.notOk(fitsAsPhoto({ format: 'png', mimeType: 'image/png', width: 6000, height: 4001 }, 1000), 'width + height over 10000')
})
