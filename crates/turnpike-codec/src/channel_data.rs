//! ChannelData messages (RFC 8656 §12.4): a 4-byte header — channel number and
//! length — then the application data, padded to 4 bytes on stream transports.
//!
//! This is the relay's hot path: parsing borrows, encoding writes only the
//! header, so a payload already in place is never copied.

use crate::error::EncodeError;

/// Bytes before the application data.
pub const HEADER_LEN: usize = 4;

/// Lowest channel number (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;

/// Highest channel number we accept. RFC 8656 narrowed the range to
/// 0x4000–0x4FFF, but RFC 5766 clients may use up to 0x7FFF.
pub const MAX_CHANNEL: u16 = 0x7FFF;

/// Whether a number is a channel number a client may bind.
pub const fn is_channel_number(n: u16) -> bool {
    n >= MIN_CHANNEL && n <= MAX_CHANNEL
}

/// Why a buffer is not a ChannelData message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelDataError {
    /// Shorter than the 4-byte header.
    TooShort,
    /// The channel number is outside 0x4000–0x7FFF.
    BadChannel,
    /// The length field claims more data than the buffer holds.
    LengthOverrun,
}

impl core::fmt::Display for ChannelDataError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ChannelDataError::TooShort => "shorter than a ChannelData header",
            ChannelDataError::BadChannel => "channel number out of range",
            ChannelDataError::LengthOverrun => "ChannelData length exceeds the data",
        })
    }
}

impl std::error::Error for ChannelDataError {}

/// A parsed ChannelData message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// The channel number.
    pub channel: u16,
    /// The application data (without padding).
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message. Bytes after the data are padding and
    /// ignored (RFC 8656 §12.5 allows padding over UDP too).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ChannelDataError> {
        if buf.len() < HEADER_LEN {
            return Err(ChannelDataError::TooShort);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        if !is_channel_number(channel) {
            return Err(ChannelDataError::BadChannel);
        }
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(ChannelDataError::LengthOverrun)?;
        Ok(ChannelData { channel, data })
    }

    /// Bytes a message with `data_len` bytes of data takes; padded to 4 when
    /// `stream` (TCP, TLS: RFC 8656 §12.5).
    pub const fn encoded_len(data_len: usize, stream: bool) -> usize {
        let len = HEADER_LEN + data_len;
        if stream { (len + 3) & !3 } else { len }
    }

    /// Writes the header for `data_len` bytes that the caller has already put
    /// (or will put) at `out[4..]`, plus zero padding when `stream`. Returns
    /// the total length.
    pub fn write_header(
        out: &mut [u8],
        channel: u16,
        data_len: usize,
        stream: bool,
    ) -> Result<usize, EncodeError> {
        let total = Self::encoded_len(data_len, stream);
        let len = u16::try_from(data_len).map_err(|_| EncodeError::MessageTooLong)?;
        if out.len() < total {
            return Err(EncodeError::BufferTooSmall);
        }
        out[0..2].copy_from_slice(&channel.to_be_bytes());
        out[2..4].copy_from_slice(&len.to_be_bytes());
        out[HEADER_LEN + data_len..total].fill(0);
        Ok(total)
    }

    /// Writes a whole message into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8], stream: bool) -> Result<usize, EncodeError> {
        let total = Self::write_header(out, self.channel, self.data.len(), stream)?;
        out[HEADER_LEN..HEADER_LEN + self.data.len()].copy_from_slice(self.data);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_datagram_and_stream() {
        let mut buf = [0u8; 16];
        let msg = ChannelData {
            channel: 0x4001,
            data: b"hello",
        };
        assert_eq!(msg.encode(&mut buf, false), Ok(9));
        assert_eq!(ChannelData::parse(&buf[..9]), Ok(msg));
        assert_eq!(msg.encode(&mut buf, true), Ok(12));
        assert_eq!(&buf[9..12], &[0, 0, 0]);
        assert_eq!(ChannelData::parse(&buf[..12]), Ok(msg));
    }

    #[test]
    fn malformed() {
        assert_eq!(
            ChannelData::parse(&[0x40, 0]),
            Err(ChannelDataError::TooShort)
        );
        assert_eq!(
            ChannelData::parse(&[0x3F, 0xFF, 0, 0]),
            Err(ChannelDataError::BadChannel)
        );
        assert_eq!(
            ChannelData::parse(&[0x80, 0x00, 0, 0]),
            Err(ChannelDataError::BadChannel)
        );
        assert_eq!(
            ChannelData::parse(&[0x40, 0x00, 0, 5, 1, 2]),
            Err(ChannelDataError::LengthOverrun)
        );
        assert_eq!(
            ChannelData::parse(&[0x7F, 0xFF, 0, 0]),
            Ok(ChannelData {
                channel: 0x7FFF,
                data: &[]
            })
        );
        let mut small = [0u8; 5];
        assert_eq!(
            ChannelData::write_header(&mut small, 0x4000, 2, true),
            Err(EncodeError::BufferTooSmall)
        );
    }
}
