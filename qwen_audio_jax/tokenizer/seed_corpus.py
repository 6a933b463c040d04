"""A small multilingual text sample (the 8 Qwen-Audio languages) for training a SentencePiece
vocabulary in seconds, e.g. for tests and tiny from-scratch models. Add real transcripts for more."""

SEED_TEXTS = (
    "And so, my fellow Americans: ask not what your country can do for you,",
    "ask what you can do for your country.",
    "The quick brown fox jumps over the lazy dog while the birds sing in the trees.",
    "Please transcribe the audio, translate it into German, and describe the sound scene.",
    "What is the emotion of the speaker? The speaker sounds happy, then angry, then calm.",
    "A dog barks twice, a car passes by, and rain falls on the roof at 3:45 pm.",
    "The piano plays a single note with pitch 60 and velocity 100; the sound is bright and percussive.",
    "You are a helpful assistant. Audio 1: what does the person say in this recording?",
    "今天天气很好，我们一起去公园散步吧。请把这段语音转写成文字。",
    "这段音频里有人在说话，背景里还有音乐和汽车的声音。",
    "Guten Morgen! Wie geht es Ihnen heute? Bitte übersetzen Sie diesen Satz ins Englische.",
    "¿Dónde está la biblioteca? Me gustaría escuchar la grabación otra vez, por favor.",
    "안녕하세요. 오늘 회의는 오후 세 시에 시작합니다. 음성을 텍스트로 바꿔 주세요.",
    "Bonjour à tous ! Le bruit de la pluie est très agréable ce soir, n'est-ce pas ?",
    "こんにちは。この音声を書き起こしてください。背景で犬が吠えています。",
    "Ciao a tutti! La musica è bellissima e il cantante ha una voce molto calda.",
    "Numbers and symbols: 0 1 2 3 4 5 6 7 8 9, 3.14, 100%, #tag, @user, e-mail: a.b@c.de",
)
